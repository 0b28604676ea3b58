"""The sentences the app and the command line share, written once in the core: the bulk run's summary
(bulk/summary.py) and the undo of a bulk decision (workspace/decisions.describe_undo). No browser, no model."""

from __future__ import annotations

import numpy as np
from PIL import Image

from diffusemix_core.bulk.stages import RunSummary
from diffusemix_core.bulk.summary import describe_failures, describe_run, settings_changed_note, summary_line
from diffusemix_core.cli.main import main as cli_main
from diffusemix_core.studio.dataset import run_message
from diffusemix_core.workspace.decisions import Decision, describe_undo


def summary(**changes) -> RunSummary:
    base = dict(run_id=1, images_total=15, images_processed=12, images_skipped=3, images_failed=0,
                augmentations_added=24, generations_added=12, generations_reused=12, seconds=6.25)
    return RunSummary(**{**base, **changes})


def test_the_run_summary_says_what_was_done_and_how_fast():
    assert describe_run(summary()) == ("15 images: 12 augmented now, 3 already done, 0 failed; 24 augmentations "
                                       "added (12 generated, 12 reused) in 6.2 s (3.8 augmentations/s)")
    assert describe_run(summary(seconds=0.0)).endswith("in 0.0 s (0.0 augmentations/s)")  # no division by zero


def test_the_one_line_summary_names_the_scorer_and_the_first_failures():
    failures = [(f"cat/{i}.png", "not an image") for i in range(7)]
    line = summary_line(summary(images_failed=7, failures=failures, scorer="tiny-random-clip"))
    assert line.startswith(describe_run(summary(images_failed=7)) + "; scored by tiny-random-clip; failed: ")
    assert "cat/0.png: not an image" in line and "cat/4.png: not an image" in line
    assert "cat/5.png" not in line and line.endswith("… and 2 more.")
    assert describe_failures(summary(failures=failures)) == [f"cat/{i}.png: not an image" for i in range(7)]
    assert summary_line(summary()) == describe_run(summary()) + "."


def test_the_apps_run_message_says_cancelled_and_changed_settings():
    assert run_message(summary()) == "✅ Done. " + summary_line(summary())
    cancelled = run_message(summary(cancelled=True, settings_changed=["lam", "feather"]))
    assert cancelled.startswith("⏹ Cancelled: run again to resume. ⚠️ This run's settings differ from the previous "
                                "run's (lam; feather)")
    detailed = run_message(summary(settings_changed=["settings.steps"], settings_details=["settings.steps 2 → 4"]))
    assert "differ from the previous run's (settings.steps 2 → 4)" in detailed
    assert settings_changed_note(summary()) == ""


def test_the_undo_sentence_counts_what_was_restored_and_what_was_left():
    batch = {"id": 7, "status": "rejected", "count": 4, "origin": "cli", "created_at": "2026-01-02T03:04:05.678+00:00"}
    text = describe_undo((batch, Decision(batch_id=8, status="undo", matched=4, changed=3)))
    assert text == ("Undid 'rejected' of 4 augmentation(s) (decision #7, cli, 2026-01-02 03:04:05): 3 restored, "
                    "1 left as they are (1 decided again since).")
    assert describe_undo((batch, Decision(batch_id=8, status="undo", matched=4, changed=4))).endswith(
        ": 4 restored.")
    assert describe_undo(None) == "There is nothing to undo: no bulk decision is left to revert."


def test_the_command_line_prints_the_shared_sentences(tmp_path, capsys, tiny_settings):
    """`augment` prints describe_run's sentence, `review --undo` describe_undo's: the words of the app."""
    train = tmp_path / "train" / "cat"
    train.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(train / f"{i}.png")
    ws = tmp_path / "ws"
    code = cli_main(["augment", "--train-dir", str(tmp_path / "train"), "--workspace", str(ws), "--model",
                     "tiny-random", "--resolution", "64", "--steps", "2", "--device", "cpu", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "2 images: 2 augmented now, 0 already done, 0 failed; 2 augmentations added" in out
    assert cli_main(["review", "--workspace", str(ws), "--undo"]) == 0
    assert capsys.readouterr().out.strip() == describe_undo(None)
    assert cli_main(["review", "--workspace", str(ws), "--approve", "--label", "cat"]) == 0
    capsys.readouterr()
    assert cli_main(["review", "--workspace", str(ws), "--undo"]) == 0
    assert capsys.readouterr().out.startswith("Undid 'approved' of 2 augmentation(s) (decision #")
