"""The ten defects of issue 20, each with a test that would have caught it (the browser ones, 1, 2 and 4, are in
test_app_review_browser.py): the app through gradio_client, the command line through subprocesses, the rest through
the functions the tabs call."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from diffusemix_core.bulk.options import AugmentOptions  # noqa: E402
from diffusemix_core.bulk.runner import run_augment  # noqa: E402
from diffusemix_core.curation import decision_plans, filters as query_filters, selection as selections  # noqa: E402
from diffusemix_core.engine.fractals import FractalLibrary  # noqa: E402
from diffusemix_core.studio.explore import download_name  # noqa: E402
from diffusemix_core.studio.run_table import duration_text, run_table  # noqa: E402
from diffusemix_core.ui import AppConfig, build_app, launch_kwargs  # noqa: E402
from diffusemix_core.workspace.folder import Workspace  # noqa: E402
from helpers import TINY, run_cli  # noqa: E402
from test_bulk_options import Echo, write_train  # noqa: E402
from test_curation import make_train  # noqa: E402

FRACTALS = FractalLibrary.procedural(3, seed=1, size=64)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app on a workspace of 12 images x 2 (Î = I: fast), nothing approved yet."""
    root = tmp_path_factory.mktemp("app-defects")
    ws = Workspace(root / "ws")
    run_augment(ws, make_train(root / "train"), AugmentOptions(per_image=2, batch_size=8, seed=1), generator=Echo(),
                fractals=FRACTALS)
    config = AppConfig(model="tiny-random", workspace=ws.path, resolution=64, steps=2, device="cpu")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield demo, Client(url, verbose=False, ssl_verify=False), config
    demo.close()


# 6 -------------------------------------------------------------------------------------------------------------
def test_6_exporting_nothing_is_refused_in_one_sentence_and_writes_no_zip(app):
    demo, client, config = app
    zip_path, message = client.predict("approved", False, api_name="/export")
    assert not isinstance(zip_path, str)  # no file
    assert message == ("❌ Nothing to export: the workspace has no approved augmentations; approve some in Curate (or "
                       "pick another status) first.")
    assert not Path(config.exports_dir).exists() or not list(Path(config.exports_dir).glob("*.zip"))
    assert client.predict(api_name="/list_exports")["data"] == []
    zip_path, message = client.predict("pending", False, api_name="/export")  # something to export: exported
    assert message.startswith("Exported 24 augmentations") and zip_path.endswith(".zip")


# 3 -------------------------------------------------------------------------------------------------------------
def test_3_the_report_plot_values_are_numbers_even_when_there_are_none(app):
    _, client, _ = app
    _, plot, _, _ = client.predict(False, "mean_label_prob", "all", api_name="/prompt_report")  # nothing scored
    assert plot["value"]["data"] == []
    # an empty first answer must not make the y axis categorical for the answers after it
    assert plot["value"]["datatypes"]["value"] == "quantitative"


# 1 (the file) ----------------------------------------------------------------------------------------------------
def test_1_a_at_full_size_is_named_after_what_it_is_and_follows_lambda(app):
    demo, client, _ = app
    explore = demo.studio.explore
    files = {lam: explore.final_full("ws-3", lam, "random", "random", None) for lam in (0.2, 0.92)}
    record = explore.workspace_record(3)
    assert Path(files[0.92]).name == download_name(explore.remixed("ws-3", 0.92, "random", "random", None))
    slug = str(Path(record.source).with_suffix("")).replace("/", "-")
    assert Path(files[0.92]).name.startswith(f"A_{slug}_{record.prompt.replace(' ', '-')}_lam0.92_seed")
    assert Path(files[0.2]).name != Path(files[0.92]).name and "lam0.20" in Path(files[0.2]).name
    assert Path(files[0.2]).read_bytes() != Path(files[0.92]).read_bytes()
    assert np.asarray(Image.open(files[0.92])).shape[:2] == record.original.shape[:2]  # full size
    odd = SimpleNamespace(source="a b/../c?.png", prompt="rainy / night", lam=0.5, requested_seed=2, mask_kind="left",
                          fractal_id="julia_001.png")
    assert download_name(odd) == "A_a-b-c_rainy-night_lam0.50_seed2_left_julia_001.png"  # no raw text in names


# 8 -------------------------------------------------------------------------------------------------------------
def test_8_a_bulk_decision_names_what_it_leaves_out_and_why(app):
    demo, client, _ = app
    ws = demo.studio.workspace
    query = query_filters.CurationQuery(status="pending")
    ids = query_filters.matching_ids(ws, query)[:3]
    ws.review("approved", ids=[ids[0]], origin="app")  # "Approve this" on the item just selected
    plan = decision_plans.plan_selected(ws, query, selections.Selection().add(*ids), "rejected")
    assert plan.count == 2 and plan.left_out == 1
    assert f"1 selected item is left alone: the filter no longer matches it (#{ids[0]} is approved now)." in \
        plan.question()
    ws.review("pending", ids=[ids[0]], origin="app")


# 9 -------------------------------------------------------------------------------------------------------------
def test_9_add_and_delete_save_at_once_as_the_hint_says(app):
    demo, client, _ = app
    hint = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "prompts-hint")
    assert "then **Save**; **Add** and **Delete** save the table at once" in hint.value
    editor = demo.studio.prompts
    library, _ = editor.add(client.predict(api_name="/get_prompts")[0], editor.library().template, "foggy morning")
    assert "foggy morning" in demo.studio.workspace.manifest.get_prompt_library().enabled()  # saved, no Save press
    rows = [row for row in client.predict(api_name="/get_prompts")[0]["data"]]
    editor.delete({"headers": ["prompt", "enabled"], "data": rows}, library.template,
                  [r[0] for r in rows].index("foggy morning"))
    assert "foggy morning" not in demo.studio.workspace.manifest.get_prompt_library().enabled()


# 7 -------------------------------------------------------------------------------------------------------------
def test_7_the_run_summary_is_a_readable_table():
    assert duration_text(0.0000048869) == "< 1 ms" and duration_text(0.0312) == "31 ms"
    assert duration_text(4.21) == "4.2 s" and duration_text(185) == "3m05s"
    rows = dict(run_table({"images_total": 3, "images_processed": 3, "augmentations_added": 6,
                           "augmentations_planned": 6, "seconds": 2.0, "model_seconds": 0.0000048869,
                           "load_seconds": 0.25, "stage_cpu_seconds": {"plan": 0.0004, "load": 0.0123},
                           "upload_bytes": 18_000, "estimate": {"total_seconds": 3.0}}))
    assert rows["result"] == "done" and rows["augmentations added"] == "6 of 6 planned"
    assert rows["time"] == "2.0 s (3.00 augmentations/s)" and rows["in the model"] == "< 1 ms"
    assert rows["CPU time: plan"] == "< 1 ms" and rows["CPU time: load"] == "12 ms"
    assert rows["upload"] == "18.0 KB"  # not "0.0 MB"
    assert not any("e-0" in v or "0.000" in v for v in rows.values())


# 5 -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("when", ["at the end", "at the start"])
def test_5_cancel_as_the_run_finishes_is_done_not_cancelled(tmp_path, when):
    ws, train, cancel = Workspace(tmp_path / "ws"), write_train(tmp_path / "train"), threading.Event()

    def progress(p):
        if (p.done == p.total and p.done) if when == "at the end" else p.done == 0:
            cancel.set()  # the Cancel button, pressed as the last batch is committed (or before the first)

    summary = run_augment(ws, train, AugmentOptions(per_image=2, batch_size=1), generator=Echo(), fractals=FRACTALS,
                          progress=progress, cancel=cancel)
    if when == "at the end":
        assert summary.augmentations_added == 6 and not summary.cancelled
    else:
        assert summary.augmentations_added < 6 and summary.cancelled


# 10 ------------------------------------------------------------------------------------------------------------
def test_10_augment_names_the_settings_that_differ(tmp_path):
    train, ws = write_train(tmp_path / "train"), tmp_path / "ws"
    first = run_cli("augment", "--train-dir", str(train), "--workspace", str(ws), "--per-image", "1", *TINY)
    assert first.returncode == 0, first.stderr
    tiny = [v if v != "2" else "3" for v in TINY]  # --steps 3
    again = run_cli("augment", "--train-dir", str(train), "--workspace", str(ws), "--per-image", "2", *tiny)
    assert again.returncode == 0, again.stderr
    assert "settings differ from the previous run's (settings.steps 2 → 3)" in again.stdout + again.stderr


def test_10_history_status_and_top5(tmp_path):
    ws = Workspace(tmp_path / "ws")
    run_augment(ws, write_train(tmp_path / "train"), AugmentOptions(per_image=1), generator=Echo(), fractals=FRACTALS)
    out = run_cli("review", "--workspace", str(ws.path), "--history", "1")
    assert out.returncode == 0 and out.stdout.strip() == "no decision on augmentation 1 yet: it is pending as it was made"
    ws.review("approved", ids=[1, 2], origin="cli")
    ws.export(tmp_path / "mine", status="approved")
    ws.export(tmp_path / "train-arm", status="approved", purpose="training")  # what `train` does for its export arm
    status = run_cli("status", "--workspace", str(ws.path))
    assert "1 exports (and 1 made by train)" in status.stdout
    assert json.loads(run_cli("status", "--workspace", str(ws.path), "--json").stdout)["exports"] == 1
    with sqlite3.connect(ws.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM exports").fetchone()[0] == 2  # both recorded


@pytest.mark.parametrize("classes", [3, 6])
def test_10_train_reports_top5_only_with_six_classes_or_more(classes):
    from diffusemix_core.training.arms import Arm
    from diffusemix_core.training.report import summary_markdown
    from diffusemix_core.training.settings import TrainSettings

    rows = [{"arm": "baseline", "seed": 0, "epoch": 1, "p": 0.0, "loss": 1.0, "val_loss": 1.0, "top1": 50.0,
             "top5": 100.0, "train_images": 4, "seconds": 1.0}]
    facts = {"workspace": Path("ws"), "sources": 4, "classes": classes, "with_generated": 0, "generated": 0,
             "val_dir": Path("val"), "val": 10, "device": "cpu"}
    text = summary_markdown(rows, [], [Arm("baseline", "baseline")], {"baseline": 4}, facts, TrainSettings(), [0])
    assert ("top-5" in text) == (classes >= 6)
