"""Curate's review mode, and defects 1, 2 and 4 of issue 20, in a real browser (headless Debian Chromium driven by
Playwright) against ``python app.py --model tiny-random --workspace W`` on a workspace of 108 tiny augmentations.

Review: keys through 100 items (each a single decision in the history, at least one item per second), undo of the
last one, previous and skip. Curate: the detail panel follows a bulk decision; *Open in Explore* shows the item in
Explore; there, one click downloads A at full size as shown now, named after what it is.
Skipped when Chromium or Playwright is missing, except under CI (env CI set), where that is a failure.
``DIFFUSEMIX_REVIEW_SHOTS=DIR`` also keeps the screenshots in DIR.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.bulk.options import AugmentOptions
from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.curation import filters as query_filters
from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.workspace.folder import Workspace
from test_app_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser
from test_app_curate_browser import free_port, wait_text
from test_bulk_options import Echo
from test_curation import make_train

ROOT = Path(__file__).resolve().parents[1]
ITEMS = 108  # 12 images x 9


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app started as a user starts it, on 108 augmentations (Î = I, so the workspace is made in seconds)."""
    tmp = tmp_path_factory.mktemp("review-browser")
    ws = Workspace(tmp / "ws")
    run_augment(ws, make_train(tmp / "train"), AugmentOptions(per_image=9, batch_size=12, seed=1), generator=Echo(),
                fractals=FractalLibrary.procedural(3, seed=1, size=64))
    port = free_port()
    log = open(tmp / "app.log", "w")
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", "tiny-random", "--workspace", str(ws.path), "--port", str(port),
         "--resolution", "64", "--steps", "2", "--device", "cpu"],
        cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("the app did not start: " + (tmp / "app.log").read_text()[-2000:])
            time.sleep(0.3)
    yield url, ws, tmp
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture
def page(served, tmp_path):
    sync_playwright = _require_browser()
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1300}, accept_downloads=True)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def shot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("DIFFUSEMIX_REVIEW_SHOTS"):
        Path(os.environ["DIFFUSEMIX_REVIEW_SHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["DIFFUSEMIX_REVIEW_SHOTS"]) / path.name)


def single_decisions(ws: Workspace) -> list[tuple[int, str]]:
    """(id, status) of every decision of one item made in the app, in order."""
    with sqlite3.connect(ws.db_path) as conn:
        return conn.execute("SELECT r.augmentation_id, r.status FROM reviews r JOIN review_batches b ON b.id = "
                            "r.batch_id WHERE b.origin = 'app' AND b.bulk = 0 ORDER BY r.id").fetchall()


def status_of(ws: Workspace, aug_id: int) -> str:
    with sqlite3.connect(ws.db_path) as conn:
        return conn.execute("SELECT status FROM augmentations WHERE id = ?", [aug_id]).fetchone()[0]


def test_review_with_keys_through_100_items(served, page, tmp_path):
    url, ws, _ = served
    order = query_filters.matching_ids(ws, query_filters.CurationQuery(status="pending", sort="newest"))
    assert len(order) == ITEMS
    page.goto(url)
    page.get_by_role("tab", name="Curate").click()
    page.locator("#curate-gallery .caption-label").first.wait_for(timeout=60_000)
    page.locator("#review-mode").get_by_text("Review one by one (keys)").click()
    page.locator("#review-start").click()
    wait_text(page, "#review-where", f"1 / {ITEMS} · 0 decided")
    assert f"**#{order[0]}**".replace("**", "") in page.locator("#review-item").inner_text()
    assert "a approve · r reject · space or → skip · ← previous · z undo" in page.locator("#review-panel").inner_text()
    page.locator("#review-final img").wait_for(timeout=30_000)
    shot(page, tmp_path, "review-mode")

    keys = ["a" if i % 4 else "r" for i in range(100)]
    started = time.perf_counter()
    for i, key in enumerate(keys):
        page.keyboard.press(key)
        wait_text(page, "#review-where", f"{i + 2} / {ITEMS} · {i + 1} decided")
    elapsed = time.perf_counter() - started
    rate = 100 / elapsed
    print(f"review mode: 100 items by key in {elapsed:.1f} s = {rate:.2f} items/s")
    assert rate >= 1.0, f"{rate:.2f} items/s"
    want = [(aug_id, "approved" if key == "a" else "rejected") for aug_id, key in zip(order, keys)]
    assert single_decisions(ws) == want  # 100 decisions, one history entry each, in the filter's order

    # z: the last decision is undone (one more history entry), and its item is shown again
    page.keyboard.press("z")
    wait_text(page, "#review-msg", f"Undone: #{order[99]} is pending again.")
    wait_text(page, "#review-where", f"100 / {ITEMS} · 99 decided")
    assert status_of(ws, order[99]) == "pending" and status_of(ws, order[98]) == want[98][1]
    # ← previous, → and space skip (no decision)
    page.keyboard.press("ArrowLeft")
    wait_text(page, "#review-where", f"99 / {ITEMS}")
    page.keyboard.press("ArrowRight")
    wait_text(page, "#review-where", f"100 / {ITEMS}")
    page.keyboard.press(" ")
    wait_text(page, "#review-where", f"101 / {ITEMS}")
    assert len(single_decisions(ws)) == 101 and status_of(ws, order[99]) == "pending"
    # keys typed into a field are text, not decisions
    page.locator("#view-id input").fill("")
    page.locator("#view-id input").type("1")
    page.keyboard.press("a")
    time.sleep(0.5)
    assert len(single_decisions(ws)) == 101


def test_detail_follows_a_bulk_decision_open_in_explore_and_one_click_download(served, page, tmp_path):
    url, ws, tmp = served
    page.goto(url)
    page.get_by_role("tab", name="Curate").click()
    page.locator("#curate-gallery .caption-label").first.wait_for(timeout=60_000)
    caption = page.locator("#curate-gallery .caption-label").first.inner_text()
    aug_id = int(re.search(r"#(\d+)", caption).group(1))
    page.locator("#curate-gallery .thumbnail-item").first.click()
    wait_text(page, "#curate-detail", f"#{aug_id}")
    page.locator("#toggle-select").click()
    wait_text(page, "#curate-detail", "✓ selected")
    # defect 2: after the bulk decision the detail shows the new status, not the old one and no selection mark
    page.locator("#approve-selected").click()
    page.locator("#bulk-yes").click()
    wait_text(page, "#curate-msg", "Approved 1 augmentation")
    wait_text(page, "#curate-detail", "status approved")
    assert "✓ selected" not in page.locator("#curate-detail").inner_text()
    assert "approved" in page.locator("#curate-history").inner_text()

    # defect 4: open the item viewed in Explore
    page.locator("#open-in-explore").click()
    page.wait_for_function("() => document.querySelector('#result-id textarea, #result-id input').value === "
                           f"'ws-{aug_id}'", timeout=30_000)
    wait_text(page, "#drawn", "λ 0.20")
    page.locator("#stage-final img").wait_for(timeout=30_000)
    shot(page, tmp_path, "open-in-explore")

    # defect 1: one click serves A as shown now, named after it; after moving λ, the new A
    def download() -> tuple[str, bytes]:
        with page.expect_download(timeout=30_000) as info:
            page.locator("#download-final").click()
        return info.value.suggested_filename, Path(info.value.path()).read_bytes()

    time.sleep(1.0)  # the file is prepared as A is shown
    name_20, data_20 = download()
    record = ws.record_from_row(ws.manifest.get_augmentation(aug_id))
    slug = str(Path(record.source).with_suffix("")).replace("/", "-")
    want = f"A_{slug}_{record.prompt.replace(' ', '-')}_lam0.20_seed{record.requested_seed}_"
    assert name_20.startswith(want) and name_20.endswith(".png") and ".png.png" not in name_20, name_20
    number = page.locator("#lam input[type=number]")
    number.fill("0.92")
    number.press("Enter")
    number.blur()
    wait_text(page, "#drawn", "λ 0.92")
    time.sleep(1.0)
    name_92, data_92 = download()
    assert "lam0.92" in name_92 and data_92 != data_20
    image = np.asarray(Image.open(__import__("io").BytesIO(data_92)))
    assert image.shape[:2] == record.original.shape[:2]


def test_groups_by_source_and_the_slider(served, page, tmp_path):
    url, ws, _ = served
    page.goto(url)
    page.get_by_role("tab", name="Curate").click()
    page.locator("#curate-gallery .caption-label").first.wait_for(timeout=60_000)
    page.locator("#groups-mode").get_by_text("Group by source").click()
    page.locator("#groups-show").click()
    wait_text(page, "#groups-page", "sources with matching items")  # the pending ones (the review decided some)
    page.locator("#group-gallery-0 .caption-label").first.wait_for(timeout=30_000)
    captions = page.locator("#group-gallery-0 .caption-label").all_inner_texts()
    ids = [int(re.search(r"#(\d+)", c).group(1)) for c in captions]
    sources = {ws.manifest.get_augmentation(i)["source_id"] for i in ids}
    assert len(ids) >= 1 and len(sources) == 1  # one source per row
    page.locator("#group-gallery-0 .thumbnail-item").nth(1).click()
    wait_text(page, "#group-slider", f"I ↔ A of #{ids[1]}")
    page.locator("#group-slider img").first.wait_for(timeout=30_000)
    shot(page, tmp_path, "groups-slider")
