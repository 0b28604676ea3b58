"""The Dataset tab's preset and cost estimate, called with gradio_client against a launched app on tiny-random:
picking a preset sets its steps, /estimate says what a run costs and writes nothing, a preset run records the
preset's scheduler and steps in the manifest and says its estimate, and the app's --preset sets the default."""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from diffusemix_core.studio.model import ModelHolder  # noqa: E402
from diffusemix_core.ui import AppConfig, build_app, config_from_args, launch_kwargs, parse_args  # noqa: E402
from helpers import manifest_count  # noqa: E402

IMAGES = 3


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    config = AppConfig(model="tiny-random", workspace=tmp_path_factory.mktemp("ws"), resolution=64, steps=2,
                       device="cpu")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield demo, Client(url, verbose=False)
    demo.close()


@pytest.fixture(scope="module")
def dataset(app, tmp_path_factory) -> str:
    """An uploaded zip of two class folders: its handle."""
    _, client = app
    archive = tmp_path_factory.mktemp("zip") / "tiny.zip"
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(IMAGES):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
            zf.writestr(f"train/{'cat' if i else 'dog'}/{i}.png", buf.getvalue())
    handle, _ = client.predict(handle_file(str(archive)), api_name="/extract_zip")
    return handle


def test_the_new_endpoints_are_listed_beside_the_old_ones(app):
    _, client = app
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/estimate", "/run_dataset_preset", "/preset_settings", "/run_dataset"):
        assert name in endpoints
    assert len(endpoints["/run_dataset"]["parameters"]) == 8  # raw callers of /run_dataset send eight inputs


@pytest.mark.parametrize(("preset", "steps", "evaluations"), [("reference", 2, 6), ("fast", 10, 30),
                                                               ("fastest", 5, 10)])
def test_picking_a_preset_sets_its_steps_and_says_its_cost(app, preset, steps, evaluations):
    _, client = app
    got_steps, message = client.predict(preset, api_name="/preset_settings")
    assert got_steps == steps  # reference keeps the app's --steps (2 here); the others bring their own
    assert f"**{preset}**" in message and f"({evaluations} UNet evaluations per augmentation)" in message


def test_estimate_counts_and_times_without_writing(app, dataset):
    demo, client = app
    ws = demo.studio.workspace.path
    before = manifest_count(ws)
    steps, _ = client.predict("fast", api_name="/preset_settings")
    text, info = client.predict(dataset, 2, 0, steps, 64, 4, False, "fast", api_name="/estimate")
    assert (info["sources"], info["to_make"], info["per_source"]) == (IMAGES, 2 * IMAGES, 2)
    assert (info["scheduler"], info["steps"], info["unet_evaluations"]) == ("dpm++", 10, 30)
    assert info["seconds_per_augmentation"] > 0 and info["device"] == "cpu"
    assert info["total_seconds"] == pytest.approx(2 * IMAGES * info["seconds_per_augmentation"])
    assert text.startswith("**Estimate**") and f"{2 * IMAGES} augmentations to make" in text
    assert "UNet evaluations per augmentation: 30" in text and "for the run on cpu" in text
    assert manifest_count(ws) == before and manifest_count(ws, "generations") == 0  # nothing was made

    with pytest.raises(Exception, match="No dataset given"):
        client.predict("", 1, 0, 2, 64, 4, False, "fast", api_name="/estimate")


def test_a_preset_run_records_the_presets_scheduler_and_steps(app, dataset):
    demo, client = app
    steps, _ = client.predict("fast", api_name="/preset_settings")
    text, info = client.predict(dataset, 1, 0, 0.2, steps, 64, 4, False, 0, "fast", api_name="/run_dataset_preset")
    assert text.startswith("✅") and info["augmentations_added"] == IMAGES
    assert info["estimate"]["to_make"] == IMAGES and info["estimate"]["unet_evaluations"] == 30
    with sqlite3.connect(demo.studio.workspace.db_path) as conn:
        settings = [json.loads(row[0]) for row in conn.execute("SELECT settings FROM generations")]
    assert len(settings) == IMAGES
    assert {(s["scheduler"], s["steps"], s["image_guidance_scale"]) for s in settings} == {
        ("DPMSolverMultistepScheduler", 10, 1.5)}

    # a resumed estimate counts the missing slots only: one more per image under fastest
    text, info = client.predict(dataset, 2, 0, 5, 64, 4, False, "fastest", api_name="/estimate")
    assert (info["to_make"], info["already"], info["unet_evaluations"]) == (IMAGES, IMAGES, 10)
    _, info = client.predict(dataset, 2, 0, 0.2, 5, 64, 4, False, 0, "fastest", api_name="/run_dataset_preset")
    assert info["augmentations_added"] == IMAGES
    with sqlite3.connect(demo.studio.workspace.db_path) as conn:
        fastest = [json.loads(r[0]) for r in conn.execute("SELECT settings FROM generations ORDER BY id")][IMAGES:]
    assert {(s["scheduler"], s["steps"], s["image_guidance_scale"]) for s in fastest} == {
        ("DPMSolverMultistepScheduler", 5, 1.0)}


def test_the_app_preset_flag_is_the_default_of_explore_and_dataset(tmp_path, monkeypatch):
    config = config_from_args(parse_args(["--workspace", str(tmp_path / "w"), "--preset", "fast"]))
    assert (config.preset, config.steps) == ("fast", None)
    holder = ModelHolder("tiny-random", device="cpu", preset=config.preset)
    assert (holder.settings().scheduler, holder.settings().steps) == ("dpm++", 10)  # what Explore generates with
    assert holder.settings(preset="reference").steps == 20
    monkeypatch.setenv("DIFFUSEMIX_PRESET", "fastest")
    monkeypatch.setenv("DIFFUSEMIX_STEPS", "7")
    config = config_from_args(parse_args(["--workspace", str(tmp_path / "w")]))
    holder = ModelHolder("tiny-random", preset=config.preset, steps=config.steps)
    assert (config.preset, holder.settings().steps, holder.settings().image_guidance_scale) == ("fastest", 7, 1.0)
    assert holder.settings(preset="fast").steps == 10  # the app's steps belong to the app's preset
    with pytest.raises(SystemExit):  # lcm needs a LoRA: not offered by the app
        parse_args(["--preset", "lcm"])


def test_in_the_browser_a_preset_sets_the_steps_estimate_shows_the_cost_and_run_shows_it_first(tmp_path):
    """Dataset tab: pick 'fast' (Steps becomes 10), Estimate (the cost appears, nothing is made), set m = 2 and Run
    (the new run's estimate is shown first, then the run is done with the preset's scheduler)."""
    from test_app_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser

    sync_playwright = _require_browser()
    config = AppConfig(model="tiny-random", workspace=tmp_path / "ws", resolution=64, steps=2, device="cpu")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    train = tmp_path / "data" / "owl"
    train.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(train / f"{i}.png")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1250})
            try:
                page = browser.new_page()
                page.goto(url)
                page.get_by_role("tab", name="Dataset").click()
                folder = page.locator("#train-dir textarea, #train-dir input").first
                folder.fill(str(train.parent))  # a typed folder: this app listens on loopback
                page.locator("#preset input").click()
                page.get_by_role("option", name="fast", exact=True).click()
                page.locator("#preset-msg").get_by_text("30 UNet evaluations per augmentation").wait_for(timeout=30_000)
                assert page.get_by_label("Steps", exact=False).first.input_value() == "10"
                page.locator("#estimate-dataset").click()
                estimate = page.locator("#estimate-msg")
                estimate.get_by_text("2 augmentations to make").wait_for(timeout=60_000)
                assert "UNet evaluations per augmentation: 30" in estimate.inner_text()
                assert manifest_count(config.workspace) == 0
                per_image = page.locator("#per-image input[type=number]")
                per_image.fill("2")
                per_image.press("Enter")
                page.locator("#run-dataset").click()  # Run says the new run's cost first
                estimate.get_by_text("4 augmentations to make").wait_for(timeout=60_000)
                page.locator("#run-msg").get_by_text("✅ Done.").wait_for(timeout=180_000)
            finally:
                browser.close()
        with sqlite3.connect(demo.studio.workspace.db_path) as conn:
            settings = [json.loads(row[0]) for row in conn.execute("SELECT settings FROM generations")]
        assert [(s["scheduler"], s["steps"]) for s in settings] == [("DPMSolverMultistepScheduler", 10)] * 4
    finally:
        demo.close()
