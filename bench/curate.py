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


def ml_rows(n: int = 10_000, dim: int = 512, classes: int = 20, seed: int = 0) -> None:
    """Embeddings, the map and the probe on synthetic CLIP-like vectors (clustered, normalised), no app:
    embedding write/read at `n` in the ``embeddings`` table (float16 BLOB rows) vs one ``.npy`` file, with the
    100k figure projected linearly; PCA at `n` and 10x`n`; the probe (5-fold logistic regression) at `n`."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from diffusemix_core.curation.embeddings import INSERT_EMBEDDING, decode, embedding_rows

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    x = centres[labels] + 0.7 * rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(prefix="bench-ml-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "e.sqlite")
        conn.execute("CREATE TABLE embeddings (target TEXT, target_id INTEGER, scorer_id INTEGER, dim INTEGER, "
                     "vector BLOB, UNIQUE (scorer_id, target, target_id))")
        t = time.perf_counter()
        with conn:
            conn.executemany(INSERT_EMBEDDING, embedding_rows("augmentation", range(n), 1, x))
        write_s = time.perf_counter() - t
        conn.close()
        size = (Path(tmp) / "e.sqlite").stat().st_size
        conn = sqlite3.connect(Path(tmp) / "e.sqlite")
        t = time.perf_counter()
        got = conn.execute("SELECT target_id, dim, vector FROM embeddings WHERE scorer_id = 1 AND target = "
                           "'augmentation' ORDER BY target_id").fetchall()
        decode((r[2] for r in got), dim)
        read_s = time.perf_counter() - t
        conn.close()
        t = time.perf_counter()
        np.save(Path(tmp) / "e.npy", x.astype(np.float16))
        npy_write = time.perf_counter() - t
        t = time.perf_counter()
        np.load(Path(tmp) / "e.npy").astype(np.float32)
        npy_read = time.perf_counter() - t
        npy_size = (Path(tmp) / "e.npy").stat().st_size
    k = 100_000 / n
    print(f"embeddings {n:,} x {dim} float16: table write {write_s:.2f} s, read {read_s:.2f} s, "
          f"{size / 2**20:.1f} MiB | npy write {npy_write:.3f} s, read {npy_read:.3f} s, {npy_size / 2**20:.1f} MiB")
    print(f"embeddings 100,000 projected: table write {write_s * k:.1f} s, read {read_s * k:.1f} s, "
          f"{size * k / 2**20:.0f} MiB | npy read {npy_read * k:.2f} s")
    for m in (n, 10 * n):
        big = x if m == n else np.concatenate([x] * 10) + 0.01 * rng.normal(size=(m, dim)).astype(np.float32)
        t = time.perf_counter()
        PCA(n_components=2, svd_solver="randomized", random_state=0).fit_transform(big)
        print(f"map projection (PCA) at {m:,} points: {time.perf_counter() - t:.2f} s")
    sources = min(n, 2_000)
    t = time.perf_counter()
    y = labels[:sources]
    for train, held in StratifiedKFold(5, shuffle=True, random_state=0).split(x[:sources], y):
        model = LogisticRegression(max_iter=1000).fit(x[:sources][train], y[train])
        model.predict_proba(x[sources:][: n // 5])  # each fold scores its share of the augmentations
    probe_s = time.perf_counter() - t
    print(f"probe: 5-fold logistic regression on {sources:,} sources of {classes} classes, scoring {n:,} "
          f"augmentations: {probe_s:.2f} s")
    print(f"probe_seconds_10k: {probe_s:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--augmentations", type=int, default=10_000, help="rows in the workspace (default 10000)")
    parser.add_argument("--calls", type=int, default=40, help="timed calls per action (default 40)")
    parser.add_argument("--ml-only", action="store_true",
                        help="only the embeddings, map and probe rows (synthetic vectors, no app; under a minute)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    ml_rows(min(args.augmentations, 10_000))
    if args.ml_only:
        return

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
