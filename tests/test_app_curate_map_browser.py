"""The map in the Curate tab in a real browser (headless Debian Chromium driven by Playwright), against the app
started as a user starts it (``python app.py --model tiny-random --workspace W``), on a workspace made by the real
bulk run and scored by tiny-random-clip (3 classes: the embeddings, the probe and the map exist).

A box dragged over the plot (mouse down, move, up) narrows the gallery to exactly the points inside it; "Approve
all matching…" counts them and changes nothing until confirmed; Undo restores them; "Clear map selection" brings
the rest back. The manifest is read directly after each step. Skipped when Chromium or Playwright is missing,
except under CI. ``DIFFUSEMIX_CURATE_SCREENSHOTS=docs`` also writes docs/curate-map.png (a small copy).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

from test_app_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser, save_small_copy
import test_app_curate_browser
from test_app_curate_browser import statuses, tile_ids, wait_text

served = test_app_curate_browser.served  # the fixture: `python app.py` on 24 scored augmentations

POINTS = "#curate-map svg .mark-symbol.role-mark path"  # the points (not the legend's symbols)


def drawn_points(page) -> list[dict]:
    """The centre (client pixels) of every point the plot drew."""
    return page.evaluate(f"""() => Array.from(document.querySelectorAll('{POINTS}')).map((p) => {{
        const r = p.getBoundingClientRect(); return {{x: r.left + r.width / 2, y: r.top + r.height / 2}}; }})""")


def box_numbers(page) -> tuple[float, ...]:
    return tuple(float(page.locator(f"#map-{k} input").input_value()) for k in ("x0", "y0", "x1", "y1"))


def in_box(ws, box, status="pending") -> set[int]:
    x0, y0, x1, y1 = box
    with sqlite3.connect(ws.db_path) as conn:
        return {r[0] for r in conn.execute(
            "SELECT m.augmentation_id FROM map_points m JOIN augmentations a ON a.id = m.augmentation_id "
            "WHERE m.x BETWEEN ? AND ? AND m.y BETWEEN ? AND ? AND a.status = ?", [x0, x1, y0, y1, status])}


def test_drag_a_box_on_the_map_then_approve_and_undo_in_chromium(served, tmp_path):
    sync_playwright = _require_browser()
    url, ws = served
    shot = tmp_path / "curate-map.png"
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1250})
        try:
            page = browser.new_page()
            page.goto(url)
            page.get_by_role("tab", name="Curate").click()
            wait_text(page, "#curate-page", "Items 1–24 of 24", timeout=60_000)
            started = time.monotonic()
            page.wait_for_function(f"document.querySelectorAll('{POINTS}').length === 24", timeout=60_000)
            print(f"map of 24 points drawn {time.monotonic() - started:.2f} s after the gallery")
            wait_text(page, "#map-note", "24** of the 24".replace("**", ""))
            page.locator("#curate-map svg g.role-legend").get_by_text("tabby-cat").wait_for()

            # a box over the left half of the points (all of their heights): some of them, not all
            points = drawn_points(page)
            xs = sorted(pt["x"] for pt in points)
            left, right = xs[0] - 6, (xs[11] + xs[12]) / 2
            top, bottom = min(pt["y"] for pt in points) - 6, max(pt["y"] for pt in points) + 6
            inside = [pt for pt in points if left <= pt["x"] <= right and top <= pt["y"] <= bottom]
            assert 0 < len(inside) < 24
            page.mouse.move(left, top)
            page.mouse.down()
            page.mouse.move((left + right) / 2, (top + bottom) / 2, steps=4)
            page.mouse.move(right, bottom, steps=4)
            page.mouse.up()
            wait_text(page, "#map-note", "Box x")
            box = box_numbers(page)
            expected = in_box(ws, box)
            assert len(expected) == len(inside)  # the gallery takes what the eye sees in the box
            wait_text(page, "#curate-page", f"of {len(expected)} ")
            assert "in the map's box" in page.locator("#curate-page").inner_text()
            assert f"{len(expected)} shown" in page.locator("#map-note").inner_text()
            assert set(tile_ids(page)) == expected
            assert page.locator("#map-box-overlay").is_visible()
            page.screenshot(path=str(shot), full_page=False, clip={"x": 0, "y": 0, "width": 1400, "height": 1250})

            # the bulk decision acts on the box: counted, then confirmed
            before = statuses(ws)
            page.locator("#approve-matching").click()
            wait_text(page, "#bulk-question", f"Approve {len(expected)} augmentation")
            assert "in the map's box" in page.locator("#bulk-question").inner_text()
            assert statuses(ws) == before
            page.locator("#bulk-yes").click()
            wait_text(page, "#curate-msg", f"Approved {len(expected)} augmentation")
            after = statuses(ws)
            assert {i for i in after if after[i] != before[i]} == expected
            assert {after[i] for i in expected} == {"approved"}
            wait_text(page, "#curate-page", "Nothing matches")  # status pending: the approved ones left
            page.wait_for_function(f"document.querySelectorAll('{POINTS}').length === {24 - len(expected)}")

            # undo restores them, in the manifest, the gallery and the map
            page.locator("#undo-review").click()
            wait_text(page, "#curate-msg", f"{len(expected)} restored")
            assert statuses(ws) == before
            wait_text(page, "#curate-page", f"of {len(expected)} ")
            page.wait_for_function(f"document.querySelectorAll('{POINTS}').length === 24")

            # a new filter keeps the box; clearing it brings every item back
            page.locator("#f-sort input").click()
            page.get_by_role("option", name="oldest first", exact=True).click()
            page.wait_for_function("([n]) => { const t = document.querySelector('#curate-page').innerText; "
                                   "return t.includes('sorted by oldest first') && t.includes(`of ${n} `) "
                                   "&& t.includes(\"in the map's box\"); }", arg=[len(expected)], timeout=30_000)
            assert set(tile_ids(page)) == expected
            page.locator("#map-clear").click()
            wait_text(page, "#curate-page", "Items 1–24 of 24")
            assert not page.locator("#map-box-overlay").count() or not page.locator("#map-box-overlay").is_visible()
            assert "Box x" not in page.locator("#map-note").inner_text()
            assert re.search(r"\*?\*?24\*?\*? of the 24", page.locator("#map-note").inner_text())
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("DIFFUSEMIX_CURATE_SCREENSHOTS"):
        save_small_copy(shot, Path(os.environ["DIFFUSEMIX_CURATE_SCREENSHOTS"]) / "curate-map.png")
