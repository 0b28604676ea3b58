"""Jobs in the app: Score started from the Jobs tab (progress, cancel, the list), items saved from Explore scored in
the background, and All prompts telling its progress prompt by prompt; through the named endpoints (gradio_client
against a launched app on tiny-random) and the functions the tabs call."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from diffusemix_core.bulk.options import AugmentOptions  # noqa: E402
from diffusemix_core.bulk.runner import run_augment  # noqa: E402
from diffusemix_core.engine.fractals import FractalLibrary  # noqa: E402
from diffusemix_core.ui import AppConfig, build_app, launch_kwargs  # noqa: E402
from diffusemix_core.workspace.folder import Workspace  # noqa: E402
from test_bulk_options import Echo  # noqa: E402
from test_curation import make_train  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "landscape.png"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app on 12 images x 3 that nobody has scored yet."""
    root = tmp_path_factory.mktemp("app-jobs")
    ws = Workspace(root / "ws")
    run_augment(ws, make_train(root / "train"), AugmentOptions(per_image=3, batch_size=12, seed=1), generator=Echo(),
                fractals=FractalLibrary.procedural(3, seed=1, size=64))
    config = AppConfig(model="tiny-random", workspace=ws.path, resolution=64, steps=2, device="cpu")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield demo, Client(url, verbose=False, ssl_verify=False)
    demo.close()


def scored(demo, metric: str = "label_prob") -> set[int]:
    """The augmentations that have a score `metric`."""
    with sqlite3.connect(demo.studio.workspace.db_path) as conn:
        return {r[0] for r in conn.execute("SELECT target_id FROM scores WHERE target = 'augmentation' AND metric = ?",
                                           [metric])}


def test_cancel_stops_a_score_job_between_batches_and_the_list_says_so(app):
    demo, _ = app
    jobs = demo.studio.jobs
    told = []

    def progress(value, **kwargs):
        told.append(value)
        if isinstance(value, tuple) and value[0] == 0:
            jobs.cancel("me")  # the Cancel button, pressed as the job starts

    message = jobs.score("none", session="me", progress=progress)
    assert message.startswith("Scored 0 augmentation(s)") and message.endswith("Stopped early: score again to finish.")
    assert told[0] == 0 and (0, 72) in told  # 36 A and 36 Î to score
    assert jobs.table()[0][1] == "score (none)" and jobs.table()[0][3] == "cancelled"


def test_score_from_the_app_then_the_list_and_curate_have_the_scores(app):
    demo, client = app
    message = client.predict("tiny-random-clip", api_name="/score")
    assert message.startswith("Scored ") and "tiny-random-clip and the quality flags" in message
    assert "Untrained test scorer" in message  # whose scores these are
    assert scored(demo) == set(range(1, 37))
    table = client.predict(api_name="/jobs")[0]
    first = dict(zip(table["headers"], table["data"][0]))
    assert first["job"] == "score (tiny-random-clip)" and first["state"] == "done" and first["progress"] == "72/72"
    assert client.predict("tiny-random-clip", api_name="/score").startswith("Nothing to score: every image")
    items, line, _, _ = client.predict("all", "all", "all", "all", "label_prob", 0, 1, 0, 1, api_name="/curate")
    assert "p 0." in items[0]["caption"]  # the scores appear in Curate


def test_an_item_saved_from_explore_is_scored(app):
    demo, client = app
    if not scored(demo):
        client.predict("tiny-random-clip", api_name="/score")
    stages = client.predict(handle_file(str(EXAMPLE)), "random", "left", 0.2, 3, "random", None, api_name="/augment")
    message = client.predict(stages[-1]["result_id"], 0.2, "random", "random", None, "cats", api_name="/approve")
    new_id = int(message.split("#")[1].split()[0])
    assert demo.studio.jobs.wait_idle(120)
    assert new_id in scored(demo) and new_id in scored(demo, "flags") | scored(demo)
    assert any(row[1] == "score saved items" and row[3] == "done" for row in demo.studio.jobs.table())


def test_all_prompts_tells_its_progress_prompt_by_prompt(app):
    demo, _ = app
    told = []
    grid, ids = demo.studio.explore.all_prompts(str(EXAMPLE), "left", 0.2, 1,
                                                progress=lambda value, **kw: told.append((value, kw.get("desc"))))
    n = len(grid)
    steps = [value for value, _ in told if isinstance(value, tuple)]
    assert steps == [(k, n) for k in range(n + 1)]  # one step per prompt
    prompts = demo.studio.workspace.manifest.get_prompt_library().enabled()
    assert (f"1 of {n} prompts done; next: {prompts[1]}") in [desc for _, desc in told]
