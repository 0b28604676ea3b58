"""Does the model ever wait? The bulk run's stages one after another vs concurrently, around a stand-in model.

    python -m bench.pipeline [--images 200] [--size 512] [--latency-ms 60] [--batch-size 8]

A generated dataset of photo-like 512² sources (smooth gradients, shapes and sensor noise; 3 classes), per-image 1,
is augmented twice into fresh workspaces, with the same seed and the same stand-in model: ``threads=1`` (every
stage in one thread, one batch after another: how the bulk run worked before it became a pipeline) and the
pipeline (plan, load, generate, compose in threads with bounded queues; commit in the caller's thread). The model is
``bench/standin.py``'s FixedLatencyGenerator: it sleeps `latency` per image (about what the real InstructPix2Pix at
512² and 20 steps takes on one H100) and is NOT a model: no --model name selects it. Everything else is the
product's code: reading, hashing, decoding, mixing, drift, PNG encoding, fsync, SQLite.

Printed: per-stage CPU ms per augmentation (CPU time of the threads doing each stage), wall time, and the
model-busy share (time the stand-in is busy / wall time) of both runs; a check that both workspaces hold the same
rows and files; the store's bytes per augmentation and the PNG level trade-off behind ``store.PNG_COMPRESS_LEVEL``.
Target: model_busy_share >= 0.9 for the pipeline on a 2-core machine. Last line: ``model_busy_share: X``.
"""

from __future__ import annotations

import argparse
import io
import os
import sqlite3
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from PIL import Image

from bench.standin import FixedLatencyGenerator
from bench.workspace import make_dataset

STAGES = ("plan", "load", "generate", "compose", "commit")


def run(train: Path, ws_path: Path, *, latency: float, batch_size: int, threads: int | None):
    from diffusemix_core.bulk.options import AugmentOptions
    from diffusemix_core.bulk.runner import run_augment
    from diffusemix_core.engine.fractals import FractalLibrary
    from diffusemix_core.workspace.folder import Workspace

    generator = FixedLatencyGenerator(latency)
    ws = Workspace(ws_path)
    summary = run_augment(ws, train, AugmentOptions(per_image=1, batch_size=batch_size, seed=0, threads=threads),
                          fractals=FractalLibrary.default(), generator=generator)
    return summary, generator


def rows(ws: Path) -> list[tuple]:
    with sqlite3.connect(ws / "manifest.sqlite") as conn:
        return conn.execute(
            "SELECT s.path, a.job_key, a.prompt, a.mask, a.fractal, a.lam, a.seed, g.path, a.fractal_path, a.drift "
            "FROM augmentations a JOIN sources s ON s.id = a.source_id JOIN generations g ON g.id = a.generation_id "
            "ORDER BY s.path, a.job_key").fetchall()


def store_bytes(ws: Path) -> int:
    return sum(p.stat().st_size for p in (ws / "images").rglob("*.png"))


def png_levels(train: Path) -> list[str]:
    """Encode time and size of the dataset's first images at PNG levels 0, 1, 3, 6 (the store's trade-off)."""
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(train.rglob("*.png"))[:8]]
    lines = []
    for level in (0, 1, 3, 6):
        started = time.perf_counter()
        sizes = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG", compress_level=level)
            sizes.append(buffer.tell())
        ms = 1000 * (time.perf_counter() - started) / len(images)
        raw = images[0].nbytes
        lines.append(f"  PNG level {level}: {ms:5.1f} ms per image, {np.mean(sizes) / raw:.2f} of raw size")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="dataset size (default 200)")
    parser.add_argument("--size", type=int, default=512, help="side of each square source (default 512)")
    parser.add_argument("--latency-ms", type=float, default=60.0, help="stand-in model time per image (default 60)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    args = parser.parse_args()
    latency = args.latency_ms / 1000

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        train = Path(tmp) / "train"
        make_dataset(train, args.images, args.size)
        print(f"dataset: {args.images} photo-like {args.size}x{args.size} PNGs, 3 classes, per-image 1; stand-in model "
              f"{args.latency_ms:.0f} ms per image (sleeps), batch {args.batch_size}; {os.cpu_count()} CPUs")
        results = {}
        for name, threads in (("serial", 1), ("pipeline", None)):
            summary, generator = run(train, Path(tmp) / name, latency=latency, batch_size=args.batch_size,
                                     threads=threads)
            n = summary.augmentations_added
            busy = generator.busy_seconds / summary.seconds
            results[name] = (summary, busy)
            cpu = "  ".join(f"{stage} {1000 * summary.stage_cpu_seconds.get(stage, 0.0) / n:5.1f}"
                            for stage in STAGES)
            print(f"{name:>8}: {summary.seconds:6.2f} s wall, {n / summary.seconds:5.2f} augmentations/s, "
                  f"model busy {generator.busy_seconds:6.2f} s = {busy:.3f} of wall")
            print(f"          CPU ms per augmentation: {cpu}")
        same = rows(Path(tmp) / "serial") == rows(Path(tmp) / "pipeline")
        print(f"same rows and stored files in both workspaces: {same}")
        speedup = results["serial"][0].seconds / results["pipeline"][0].seconds
        print(f"pipeline vs serial: {speedup:.2f}x faster")
        stored = store_bytes(Path(tmp) / "pipeline")
        n = results["pipeline"][0].augmentations_added
        print(f"store: {stored / n / 1024:.0f} KiB per augmentation (I + Î; A and the fitted F are composed on demand)")
        print("\n".join(png_levels(train)))
        print(f"model_busy_share_serial: {results['serial'][1]:.3f}")
        print(f"model_busy_share: {results['pipeline'][1]:.3f}")


if __name__ == "__main__":
    main()
