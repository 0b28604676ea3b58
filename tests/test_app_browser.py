"""The app in a real browser: headless Debian Chromium driven by Playwright for Python.

Upload an image, Generate, see the six labelled stages, move λ (re-mix without the model), Approve, Export,
and save a screenshot. Skipped when Chromium or Playwright is missing, except under CI (env CI set), where that
is a failure. ``DIFFUSEMIX_SCREENSHOT=docs/screenshot.png`` also writes a small copy of the screenshot there.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from diffusemix_core.ui import AppConfig, build_app, launch_kwargs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "landscape.png"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STAGE_LABELS = ("I · original", "Î · generated", "M · mask", "H · hybrid", "F · fractal", "A · final")


def _require_browser():
    """The Playwright API, or skip (fail under CI) when it or Chromium is missing."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "Playwright for Python is not installed (pip install playwright)"
        sync_playwright = None
    if missing is None and not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must run the browser test.")
        pytest.skip(missing)
    return sync_playwright


@pytest.fixture
def app_url(tmp_path):
    resolution = 256 if os.environ.get("DIFFUSEMIX_SCREENSHOT") else 64  # a nicer picture for the README
    config = AppConfig(model="tiny-random", workspace=tmp_path / "ws", resolution=resolution, steps=2, device="cpu")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield url, demo
    demo.close()


def save_small_copy(screenshot: Path, target: Path, max_bytes: int = 400_000) -> None:
    """A palette PNG copy of the screenshot, shrunk until it is under max_bytes (for the README)."""
    from PIL import Image

    image = Image.open(screenshot).convert("RGB")
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
        if target.stat().st_size <= max_bytes or image.width < 600:
            return
        image = image.resize((int(image.width * 0.85), int(image.height * 0.85)), Image.Resampling.LANCZOS)


def test_explore_remix_approve_export_in_chromium(app_url, tmp_path):
    sync_playwright = _require_browser()
    url, demo = app_url
    shot = tmp_path / "screenshot.png"
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile every run
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1250},
        )
        try:
            page = browser.new_page()
            page.goto(url)
            page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLE))
            page.locator("#input-image img").wait_for(timeout=30_000)
            page.locator("#generate").click()
            page.locator("#stage-final img").wait_for(timeout=120_000)
            for label in STAGE_LABELS:
                assert page.get_by_text(label, exact=True).first.is_visible(), label
            for stage in ("original", "generated", "mask", "hybrid", "fractal", "final"):
                assert page.locator(f"#stage-{stage} img").get_attribute("src").endswith(".png"), stage
            assert page.get_by_text("Untrained test model").first.is_visible()
            before = page.locator("#stage-final img").get_attribute("src")
            generated = page.locator("#stage-generated img").get_attribute("src")

            slider = page.locator("#lam input[type=range]")
            box = slider.bounding_box()
            slider.click(position={"x": box["width"] * 0.6, "y": box["height"] / 2})
            page.wait_for_function(
                "(s) => { const i = document.querySelector('#stage-final img'); return i && i.src !== s; }",
                arg=before, timeout=30_000,
            )
            lam = float(slider.input_value())
            assert 0.5 <= lam <= 0.7
            page.locator("#choices").get_by_text(f"{lam}", exact=False).first.wait_for(timeout=10_000)
            assert page.locator("#stage-generated img").get_attribute("src") == generated  # Î not regenerated

            page.locator("#approve").click()
            page.locator("#save-msg").get_by_text("Saved as #").wait_for(timeout=30_000)
            page.screenshot(path=str(shot))

            page.get_by_role("tab", name="Export").click()
            page.locator("#export").click()
            page.locator("#export-msg").get_by_text("Exported 1 augmentation to").wait_for(timeout=60_000)
            assert ".zip" in page.locator("#export-file").inner_text()
        finally:
            browser.close()

    assert shot.stat().st_size > 10_000
    rows = demo.studio.workspace.manifest.list_augmentations(status="approved")
    assert len(rows) == 1 and rows[0]["lam"] == pytest.approx(lam)
    exports = demo.studio.workspace.manifest.list_exports()
    assert len(exports) == 1 and zipfile.is_zipfile(exports[0]["zip_path"])
    if os.environ.get("DIFFUSEMIX_SCREENSHOT"):
        save_small_copy(shot, Path(os.environ["DIFFUSEMIX_SCREENSHOT"]))


def test_a_dataset_run_from_the_tab_uses_its_mask_feather(app_url, tmp_path):
    """Upload a zip in the Dataset tab, set the mask feather, Run: the augmentations have that feather."""
    import io

    import numpy as np
    from PIL import Image

    sync_playwright = _require_browser()
    url, demo = app_url
    archive = tmp_path / "birds.zip"
    rng = np.random.default_rng(3)
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(2):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buffer, format="PNG")
            zf.writestr(f"train/owl/{i}.png", buffer.getvalue())
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1250},
        )
        try:
            page = browser.new_page()
            page.goto(url)
            page.get_by_role("tab", name="Dataset").click()
            page.locator("#dataset-zip input[type=file]").set_input_files(str(archive))
            page.get_by_role("button", name="Extract into the workspace").click()
            page.locator("#train-dir textarea, #train-dir input").first.wait_for(timeout=30_000)
            page.wait_for_function("() => (document.querySelector('#train-dir textarea') || "
                                   "document.querySelector('#train-dir input')).value.startsWith('upload:')",
                                   timeout=60_000)
            feather = page.locator("#feather input[type=number]")
            feather.fill("20")
            feather.press("Enter")
            page.locator("#run-dataset").click()
            page.locator("#run-msg").get_by_text("✅ Done.").wait_for(timeout=180_000)
        finally:
            browser.close()
    rows = demo.studio.workspace.manifest.list_augmentations(label="owl")
    assert [r["feather"] for r in rows] == [20, 20]
