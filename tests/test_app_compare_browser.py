"""The Explore tab's "Compare presets" in a real browser: headless Debian Chromium driven by Playwright for Python.

Upload an image, open the accordion, pick two presets, click Compare, and see both Î and their cost table. Skipped
when Chromium or Playwright is missing, except under CI (env CI set), where that is a failure (the helpers of
``test_app_browser.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_app_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser

from diffusemix_core.ui import AppConfig, build_app, launch_kwargs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "landscape.png"


@pytest.fixture
def app_url(tmp_path):
    config = AppConfig(model="tiny-random", workspace=tmp_path / "ws", resolution=64, steps=2, device="cpu")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield url
    demo.close()


def pick(page, dropdown_id: str, value: str) -> None:
    page.locator(f"#{dropdown_id} input").click()
    page.locator(f"#{dropdown_id}").get_by_role("option", name=value, exact=True).click()


def test_compare_two_presets_in_chromium(app_url, tmp_path):
    sync_playwright = _require_browser()
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1600},
        )
        try:
            page = browser.new_page()
            page.goto(app_url)
            page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLE))
            page.locator("#input-image img").wait_for(timeout=30_000)
            page.get_by_text("Compare presets", exact=True).click()
            pick(page, "compare-a", "fastest")
            pick(page, "compare-b", "fast")
            page.locator("#compare-run").click()
            page.locator("#compare-image-a img").wait_for(timeout=120_000)
            page.locator("#compare-image-b img").wait_for(timeout=30_000)
            for image in ("a", "b"):
                assert page.locator(f"#compare-image-{image} img").get_attribute("src").endswith(".png"), image
            page.wait_for_function("() => document.querySelector('#compare-table').innerText.includes('fastest')",
                                   timeout=10_000)
            cells = [line.strip() for line in page.locator("#compare-table").inner_text().splitlines()]
            assert "10" in cells and "30" in cells, cells  # fastest: 5 steps x 2 branches; fast: 10 x 3
            message = page.locator("#compare-msg").inner_text()
            assert "3.00×" in message and "SSIM" in message, message
            assert "❌" not in message
            page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        finally:
            browser.close()
