"""Latency of the Curate tab on a 10,000-augmentation workspace, through gradio_client against ``python app.py``.

    python -m bench.curate [--augmentations 10000] [--calls 40]

(run from the repository root: it imports ``bench.app`` and starts ``app.py`` from there.)

1. A real workspace: 12 images x 2 through the bulk run (tiny-random at 64 px, scored by tiny-random-clip), then
   grown to ``--augmentations`` rows by direct inserts in one transaction: copies of the real rows (same I, Î,
   fractal, mask and λ, so their previews exist) with their own drift, status, label scores and flags (seeded).
2. The app started as a user starts it (``python app.py --model tiny-random --workspace W``, its own process:
   queue, JSON, file handling included) on a free local port.
3. Timed from this process's client, each after a warm-up call:
   * **filter change**: ``/curate`` with another filter every call (label x status x sort), answering page 1 (40
     tiles with their captions, the page as a table, the page line);
   * **page turn**: ``/next_page`` through the 10,000 sorted by label probability;
   * **threshold count**: ``/threshold`` with a new threshold every call (the histogram of the score over what the
     filter matches, split at the threshold, and the count).
   The headline client (``ssl_verify=False``, ``download_files=False``) measures the app's answer; a browser then
   fetches the 40 previews itself, in parallel. gradio_client's default, which downloads each preview one after
   another before returning, is timed too, for comparison.

Prints median and p95 in milliseconds. Target: every median under 300 ms on a 2-core CPU. Last line:
``curate_median_ms: X``, the worst of the three medians.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.app import free_port, report, timed, wait_for_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("cats", "dogs", "tabby-cat")


def real_workspace(folder: Path) -> Path:
    """12 images x 2 through the bulk run on tiny-random at 64 px, scored by tiny-random-clip."""
    from diffusemix_core.bulk.options import AugmentOptions
    from diffusemix_core.bulk.runner import run_augment
    from diffusemix_core.engine.fractals import FractalLibrary
    from diffusemix_core.engine.generation import GenerationSettings
    from diffusemix_core.engine.pix2pix import Pix2PixGenerator
    from diffusemix_core.workspace.folder import Workspace

    rng = np.random.default_rng(5)
    for c in CLASSES:
        (folder / "train" / c).mkdir(parents=True)
        for i in range(4):
            small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
            Image.fromarray(small).resize((80, 64), Image.BICUBIC).save(folder / "train" / c / f"{i}.png")
    generator = Pix2PixGenerator(GenerationSettings(model="tiny-random", resolution=64, steps=2, device="cpu"))
    ws = Workspace(folder / "ws")
    run_augment(ws, folder / "train", AugmentOptions(per_image=2, batch_size=4, seed=1, scorer="tiny-random-clip"),
                generator=generator, fractals=FractalLibrary.procedural(3, seed=1, size=64))
    return ws.path


def grow(ws: Path, total: int, seed: int = 0) -> float:
    """Copies of the workspace's augmentations (with their own drift, status, scores) up to `total` rows."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    conn = sqlite3.connect(ws / "manifest.sqlite")
    try:
        conn.row_factory = sqlite3.Row
        base = [dict(r) for r in conn.execute("SELECT * FROM augmentations ORDER BY id")]
        label_id, quality_id = (conn.execute("SELECT max(id) FROM scorers WHERE kind = ?", [k]).fetchone()[0]
                                for k in ("label", "quality"))
        next_id = max(r["id"] for r in base) + 1
        count = total - len(base)
        columns = [c for c in base[0] if c != "id"]
        rows, score_rows = [], []
        statuses = rng.choice(["pending", "approved", "rejected"], size=count, p=[0.8, 0.12, 0.08])
        probs = rng.beta(2.0, 3.0, size=count)
        flagged = rng.random(count) < 0.05
        for i in range(count):
            row = dict(base[i % len(base)], id=next_id + i, job_key=f"bench:{i}", status=str(statuses[i]),
                       drift=float(rng.uniform(0.2, 1.0)), slot=None)
            rows.append([row["id"], *(row[c] for c in columns)])
            p = float(probs[i])
            score_rows += [
                ("augmentation", row["id"], label_id, "label_prob", p, None),
                ("augmentation", row["id"], label_id, "label_rank", 1.0 if p > 0.5 else 2.0, None),
                ("augmentation", row["id"], label_id, "top_prob", max(p, 1 - p), row["label"]),
                ("augmentation", row["id"], quality_id, "flags", float(flagged[i]), "blank" if flagged[i] else ""),
            ]
        with conn:
            conn.executemany(f"INSERT INTO augmentations (id, {', '.join(columns)}) "
                             f"VALUES ({', '.join('?' * (len(columns) + 1))})", rows)
            conn.executemany("INSERT INTO scores (target, target_id, scorer_id, metric, value, text) "
                             "VALUES (?, ?, ?, ?, ?, ?)", score_rows)
    finally:
        conn.close()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--augmentations", type=int, default=10_000, help="rows in the workspace (default 10000)")
    parser.add_argument("--calls", type=int, default=40, help="timed calls per action (default 40)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from gradio_client import Client

    tmp = Path(tempfile.mkdtemp(prefix="bench-curate-"))
    started = time.perf_counter()
    ws = real_workspace(tmp)
    seconds = grow(ws, args.augmentations)
    print(f"workspace: 24 augmentations by the bulk run ({time.perf_counter() - started - seconds:.1f} s), grown to "
          f"{args.augmentations:,} by direct inserts ({seconds:.2f} s); {os.cpu_count()} CPUs")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", "tiny-random", "--workspace", str(ws), "--port", str(port)],
        cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_app(Client, url)
        client = Client(url, verbose=False, ssl_verify=False, download_files=False)
        filters = itertools.cycle(itertools.product(("all", *CLASSES), ("all", "pending"),
                                                    ("newest", "label_prob", "drift", "flags")))

        def filter_change(c) -> list[float]:
            times = []
            for i in range(args.calls + 1):
                label, status, sort = next(filters)
                ms, out = timed(c.predict, label, "all", status, "all", sort, 0, 1, 0, 1, api_name="/curate")
                assert len(out[0]) == 40 and out[1].startswith("Items 1–40 of "), out[1]
                if i:
                    times.append(ms)
            return times

        filter_ms = filter_change(client)
        client.predict("all", "all", "all", "all", "label_prob", 0, 1, 0, 1, api_name="/curate")
        page_ms = []
        for i in range(args.calls + 1):
            ms, out = timed(client.predict, api_name="/next_page")
            assert out[1].startswith(f"Items {40 * (i + 1) + 1}–"), out[1]
            if i:
                page_ms.append(ms)
        threshold_ms = []
        for i in range(args.calls + 1):
            threshold = round(0.05 + 0.9 * i / args.calls, 3)
            ms, (plot, text) = timed(client.predict, "label_prob", threshold, api_name="/threshold")
            assert f"of the {args.augmentations:,} shown" in text, text
            if i:
                threshold_ms.append(ms)
        downloading = Client(url, verbose=False, ssl_verify=False)
        download_ms = filter_change(downloading)

        report("filter change (/curate, 40 tiles)", filter_ms)
        report("page turn (/next_page)", page_ms)
        report("threshold count (/threshold)", threshold_ms)
        report("filter change, previews downloaded", download_ms)
    finally:
        server.terminate()
        server.wait(timeout=30)
    worst = max(statistics.median(ms) for ms in (filter_ms, page_ms, threshold_ms))
    print(f"curate_median_ms: {worst:.1f}")


if __name__ == "__main__":
    main()
