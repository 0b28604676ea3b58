"""The Curate tab and the prompt report in a real browser (headless Debian Chromium driven by Playwright), against
the app started as a user starts it: ``python app.py --model tiny-random --workspace W``, on a workspace made by
the real bulk run and scored by tiny-random-clip.

Viewing is not selecting; selected tiles are marked; a bulk decision shows its count and changes nothing until
confirmed, then clears the selection; a filter change clears it; the threshold's count is what gets rejected; the
detail view shows every score and the history; the prompt report shows a table and a plot; Explore shows what was
drawn. Skipped when Chromium or Playwright is missing, except under CI (env CI set), where that is a failure.
``DIFFUSEMIX_CURATE_SCREENSHOTS=docs`` also writes docs/curate.png and docs/prompt-report.png (small copies).
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.bulk.options import AugmentOptions
from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.test_models import UNTRAINED_SCORER_NOTE
from diffusemix_core.workspace.folder import Workspace
from test_app_browser import CHROMIUM, CHROMIUM_ARGS, EXAMPLE, _require_browser, save_small_copy
from test_curation import make_train

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(tmp_path, tiny_generator):
    """`python app.py --model tiny-random --workspace W` in its own process, on a scored workspace."""
    ws = Workspace(tmp_path / "ws")
    run_augment(ws, make_train(tmp_path / "train"), AugmentOptions(per_image=2, batch_size=4, seed=1,
                                                                   scorer="tiny-random-clip"),
                generator=tiny_generator, fractals=FractalLibrary.procedural(3, seed=1, size=64))
    port = free_port()
    log = open(tmp_path / "app.log", "w")
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", "tiny-random", "--workspace", str(ws.path), "--port", str(port),
         "--resolution", "64", "--steps", "2", "--device", "cpu"],
        cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"), stdout=log,
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("the app did not start: " + (tmp_path / "app.log").read_text()[-2000:])
            time.sleep(0.3)
    yield url, ws
    server.terminate()
    server.wait(timeout=30)
    log.close()


def statuses(ws: Workspace) -> dict[int, str]:
    with sqlite3.connect(ws.db_path) as conn:
        return dict(conn.execute("SELECT id, status FROM augmentations"))


def tile_ids(page) -> list[int]:
    captions = page.locator("#curate-gallery .caption-label").all_inner_texts()
    return [int(re.search(r"#(\d+)", c).group(1)) for c in captions]


def caption_of(page, index: int) -> str:
    return page.locator("#curate-gallery .caption-label").nth(index).inner_text()


def view_tile(page, index: int, aug_id: int) -> None:
    page.locator("#curate-gallery .thumbnail-item").nth(index).click()
    page.locator("#curate-detail").get_by_text(f"#{aug_id}", exact=True).wait_for(timeout=30_000)


def choose(page, elem_id: str, option: str) -> None:
    """Pick an option of a Gradio dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def wait_text(page, selector: str, text: str, timeout: float = 30_000) -> None:
    """Wait until the element's visible text holds `text`."""
    page.wait_for_function("([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
                           arg=[selector, text], timeout=timeout)


def test_curate_and_prompt_report_in_chromium(served, tmp_path):
    sync_playwright = _require_browser()
    url, ws = served
    shots = {name: tmp_path / f"{name}.png" for name in ("curate", "prompt-report")}
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1250})
        try:
            page = browser.new_page()
            page.goto(url)
            page.get_by_role("tab", name="Curate").click()
            page.locator("#curate-gallery .caption-label").first.wait_for(timeout=60_000)
            wait_text(page, "#curate-page", "Items 1–24 of 24")
            ids = tile_ids(page)
            assert len(ids) == 24 and ids == sorted(ids, reverse=True)  # newest first, the default
            # captions carry the scores
            assert re.match(rf"#{ids[0]} pending · p 0\.\d\d\* · drift \d\.\d\d · ", caption_of(page, 0))
            assert UNTRAINED_SCORER_NOTE in page.locator("#curate-page").inner_text()

            # viewing is not selecting, even twice
            view_tile(page, 1, ids[1])
            view_tile(page, 1, ids[1])
            assert page.locator("#curate-selection").inner_text() == "Nothing selected."
            detail = page.locator("#curate-detail").inner_text()
            assert "tiny-random-clip" in detail and UNTRAINED_SCORER_NOTE in detail
            scores = page.locator("#curate-scores").inner_text()
            for name in ("label probability", "label rank", "CLIP's top class", "flags", "drift of Î from I"):
                assert name in scores, name
            assert page.locator("#curate-final img").get_attribute("src").endswith(".png")

            # selecting is its own act, and the selected tiles are marked
            page.locator("#toggle-select").click()
            wait_text(page, "#curate-selection", f"1 selected: #{ids[1]}.")
            view_tile(page, 3, ids[3])
            page.locator("#toggle-select").click()
            wait_text(page, "#curate-selection", "2 selected")
            view_tile(page, 5, ids[5])  # viewing a third one changes nothing
            wait_text(page, "#curate-detail", "status **pending**".replace("**", ""))
            assert page.locator("#curate-selection").inner_text() == f"2 selected: #{ids[3]}, #{ids[1]}."
            marked = [caption_of(page, i).startswith("✓ ") for i in range(6)]
            assert marked == [False, True, False, True, False, False]
            table = page.locator("#curate-table").inner_text()
            assert table.count("✓") >= 2

            # histogram and threshold, with the count before confirming
            slider = page.locator("#h-threshold input[type=range]")
            box = slider.bounding_box()
            slider.click(position={"x": box["width"] * 0.45, "y": box["height"] / 2})
            threshold = float(slider.input_value())
            wait_text(page, "#h-count", f"below {threshold:.2f}")
            count = int(re.search(r"(\d+) of the", page.locator("#h-count").inner_text()).group(1))
            page.locator("#h-plot canvas, #h-plot svg").first.wait_for(timeout=30_000)
            page.locator("#h-reject").click()
            wait_text(page, "#h-question", f"Reject {count} augmentation")
            page.screenshot(path=str(shots["curate"]), full_page=True)
            before = statuses(ws)
            assert list(before.values()).count("rejected") == 0  # counted, not changed

            # a bulk decision: counted, then confirmed; the selection is cleared
            page.locator("#h-no").click()
            wait_text(page, "#h-msg", "Cancelled: nothing changed.")
            page.locator("#reject-selected").click()
            wait_text(page, "#bulk-question", "Reject 2 augmentations from the selection?")
            assert statuses(ws) == before
            page.locator("#bulk-yes").click()
            wait_text(page, "#curate-msg", "Rejected 2 augmentations from the selection")
            wait_text(page, "#curate-selection", "Nothing selected.")
            after = statuses(ws)
            assert {i for i in after if after[i] != before[i]} == {ids[1], ids[3]}
            wait_text(page, "#curate-page", "Items 1–22 of 22")  # status pending: the rejected ones left

            # the threshold's count is what gets rejected
            slider.click(position={"x": box["width"] * 0.45, "y": box["height"] / 2})
            wait_text(page, "#h-count", f"of the 22 shown have label prob of A below {threshold:.2f}")
            count = int(re.search(r"(\d+) of the", page.locator("#h-count").inner_text()).group(1))
            page.locator("#h-reject").click()
            wait_text(page, "#h-question", f"Reject {count} augmentation")
            page.locator("#h-yes").click()
            wait_text(page, "#h-msg", f"Rejected {count} augmentation")
            final = statuses(ws)
            assert sum(final[i] != after[i] for i in final) == count
            assert page.locator("#curate-msg").inner_text().startswith("✅ Rejected 2")  # the message stays

            # a filter change clears the selection; the history shows the decisions
            page.locator("#select-page").click()
            wait_text(page, "#curate-selection", "selected:")
            choose(page, "f-status", "all")
            wait_text(page, "#curate-page", "Items 1–24 of 24")
            wait_text(page, "#curate-selection", "Nothing selected.")
            assert not any(c.startswith("✓") for c in
                           page.locator("#curate-gallery .caption-label").all_inner_texts())
            position = tile_ids(page).index(ids[1])
            view_tile(page, position, ids[1])
            wait_text(page, "#curate-history", "rejected")
            assert "app" in page.locator("#curate-history").inner_text()

            # the prompt report: a table and a bar plot, marked as made by an untrained scorer
            page.get_by_role("tab", name="Prompt library").click()
            wait_text(page, "#report-note", UNTRAINED_SCORER_NOTE)
            page.locator("#report-plot canvas, #report-plot svg").first.wait_for(timeout=30_000)
            assert "p(A) mean" in page.locator("#report-table").inner_text()
            page.screenshot(path=str(shots["prompt-report"]), full_page=True)

            # Explore says what was drawn, under A and in the dropdowns
            page.get_by_role("tab", name="Explore").click()
            page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLE))
            page.locator("#input-image img").wait_for(timeout=30_000)
            page.locator("#generate").click()
            wait_text(page, "#drawn", "A = prompt", timeout=120_000)
            drawn = page.locator("#drawn").inner_text()
            assert re.search(r"mask (left|right|top|bottom) \(\w+ half of I kept\) · fractal \S+ · λ 0\.20", drawn)
            assert page.get_by_text("this A: ").count() == 3
        finally:
            browser.close()

    for shot in shots.values():
        assert shot.stat().st_size > 10_000
    if os.environ.get("DIFFUSEMIX_CURATE_SCREENSHOTS"):
        folder = Path(os.environ["DIFFUSEMIX_CURATE_SCREENSHOTS"])
        for name, shot in shots.items():
            save_small_copy(shot, folder / f"{name}.png")
