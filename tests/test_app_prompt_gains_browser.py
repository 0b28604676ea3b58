"""The Prompt library tab in headless Chromium: each prompt with its measured gain, and "Disable harmful prompts"
showing the list and asking before it writes (nothing changes until "Yes, disable them" is clicked)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diffusemix_core.engine.prompts import PromptEntry, PromptLibrary
from diffusemix_core.ui import AppConfig, build_app, launch_kwargs
from diffusemix_core.workspace.folder import Workspace
from diffusemix_core.workspace.prompt_gains import record_prompt_gains
from test_app_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser

SHOTS = os.environ.get("DIFFUSEMIX_SHOTS")  # a folder to keep the screenshots in


@pytest.fixture
def app_url(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.manifest.set_prompt_library(PromptLibrary([PromptEntry(t) for t in ("autumn", "snowy", "sunset")]))
    record_prompt_gains(ws, [
        {"prompt": "autumn", "gain": 3.5, "low": 0.8, "high": 6.2, "repeats": 3, "model": "resnet18", "epochs": 5},
        {"prompt": "snowy", "gain": -6.0, "low": -9.1, "high": -2.9, "repeats": 3, "model": "resnet18", "epochs": 5},
    ])
    config = AppConfig(model="tiny-random", workspace=tmp_path / "ws", resolution=64, steps=2, device="cpu")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield url, ws
    demo.close()


def test_gains_beside_the_prompts_and_a_confirmed_disable(app_url, tmp_path):
    sync_playwright = _require_browser()
    url, ws = app_url
    shots = Path(SHOTS) if SHOTS else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1100})
        try:
            page = browser.new_page()
            page.goto(url)
            page.get_by_role("tab", name="Prompt library").click()
            table = page.locator("#prompt-table")
            page.wait_for_function("() => (document.querySelector('#prompt-table') || {}).innerText"
                                   "?.includes('+3.5 [+0.8, +6.2] ×3')", timeout=30_000)
            assert table.get_by_test_id("cell-0-2").inner_text().strip() == "+3.5 [+0.8, +6.2] ×3"
            assert table.get_by_test_id("cell-1-2").inner_text().strip() == "-6.0 [-9.1, -2.9] ×3"
            assert table.get_by_test_id("cell-2-2").inner_text().strip() == "–"  # never measured
            assert "measured gain" in table.inner_text()
            page.screenshot(path=str(shots / "prompt-library-gains.png"), full_page=True)

            page.locator("#disable-harmful").click()
            message = page.locator("#prompt-msg")
            message.get_by_text("make the model worse beyond the noise", exact=False).wait_for(timeout=30_000)
            assert "snowy" in message.inner_text() and "autumn" not in message.inner_text()
            confirm = page.locator("#confirm-disable")
            confirm.wait_for(state="visible", timeout=10_000)
            page.screenshot(path=str(shots / "prompt-library-confirm.png"), full_page=True)
            assert ws.manifest.get_prompt_library().enabled() == ["autumn", "snowy", "sunset"]  # asked, not written

            page.locator("#keep-prompts").click()
            message.get_by_text("Nothing changed").wait_for(timeout=10_000)
            assert ws.manifest.get_prompt_library().enabled() == ["autumn", "snowy", "sunset"]

            page.locator("#disable-harmful").click()
            confirm.wait_for(state="visible", timeout=10_000)
            confirm.click()
            message.get_by_text("Disabled 1 prompt(s): snowy").wait_for(timeout=30_000)
            assert ws.manifest.get_prompt_library().enabled() == ["autumn", "sunset"]
            page.locator("#measure-prompts").get_by_text("Measure prompts by training").click()
            page.locator("#measure-start").wait_for(state="visible", timeout=10_000)
            page.screenshot(path=str(shots / "prompt-library-measure.png"), full_page=True)
        finally:
            browser.close()
