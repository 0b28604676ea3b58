"""Bulk-run benchmark of the workspace: images/s end to end, the share of wall time spent outside the model,
and the cost of re-running a finished job (resume).

    python -m bench.workspace [--images 200] [--size 128] [--resolution 64] [--steps 4] [--per-image 1]

A generated dataset (smooth photo-like images, 3 classes) is augmented on ``tiny-random`` in a fresh temporary
workspace. "Inside the model" is the time spent in ``Pix2PixGenerator.load`` and ``generate`` (measured by
``run_augment``); the rest of the wall time (walking, hashing, decoding, drawing, mixing, drift, PNG encoding,
atomic writes with fsync, SQLite, less what the pipeline overlaps with the model) is overhead. The run shares the
cores with torch itself (cpu_share.py); the threads it gave torch are printed. Targets: overhead < 20 % of wall time; resume < 5 % of the first run.
Last line: ``overhead_share: X``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from PIL import Image


def make_dataset(root: Path, n: int, size: int, classes: int = 3, seed: int = 0) -> None:
    """n smooth, photo-like PNGs (gradients + shapes + noise) spread over `classes` class folders."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    names = ["cat", "café au lait", "dog", "bird", "fish"][:classes]
    for c in names:
        (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a, b, c = rng.uniform(0, 255, 3)
        img = np.stack([a * x + (255 - a) * y, b * (1 - x), c * y * x], axis=-1)
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / names[i % classes] / f"img_{i:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="dataset size (default 200)")
    parser.add_argument("--size", type=int, default=128, help="side of each square source image (default 128)")
    parser.add_argument("--resolution", type=int, default=64, help="model working resolution (default 64)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    parser.add_argument("--per-image", type=int, default=1, help="augmentations per image (default 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync of stored files (Workspace(durable=False))")
    args = parser.parse_args()

    from diffusemix_core.engine.fractals import FractalLibrary
    from diffusemix_core.engine.generation import GenerationSettings
    from diffusemix_core.engine.pix2pix import Pix2PixGenerator
    from diffusemix_core.bulk.options import AugmentOptions
    from diffusemix_core.bulk.runner import run_augment
    from diffusemix_core.workspace.folder import Workspace

    settings = GenerationSettings(model="tiny-random", resolution=args.resolution, steps=args.steps, device="cpu")
    fractals = FractalLibrary.default()
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        train = Path(tmp) / "train"
        make_dataset(train, args.images, args.size)
        ws = Workspace(Path(tmp) / "ws", durable=not args.no_fsync)
        generator = Pix2PixGenerator(settings)  # loaded inside the run: its load time counts as model time

        options = AugmentOptions(per_image=args.per_image, batch_size=args.batch_size, seed=0)
        first = run_augment(ws, train, options, fractals=fractals, generator=generator)
        model = first.model_seconds + first.load_seconds
        overhead = first.seconds - model
        t0 = time.perf_counter()
        resumed = run_augment(ws, train, options, fractals=fractals, generator=generator)
        resume_seconds = time.perf_counter() - t0
        assert resumed.augmentations_added == 0 and resumed.images_skipped == args.images

        with ws.manifest.session() as db:  # what the run gave torch (cpu_share.py)
            used = json.loads(db.execute("SELECT args FROM runs ORDER BY id LIMIT 1").fetchone()[0])["cpu_share"]
        threads = sorted({u["threads"] for u in used["used"]})
        print(f"dataset: {args.images} images {args.size}x{args.size}, 3 classes; tiny-random at {args.resolution} px, "
              f"{args.steps} steps, per-image {args.per_image}, batch {args.batch_size}, torch threads {threads}, "
              f"fsync {'off' if args.no_fsync else 'on'}")
        print(f"first run: {first.seconds:.2f} s, {args.images / first.seconds:.2f} images/s, "
              f"{first.augmentations_added / first.seconds:.2f} augmentations/s end to end")
        print(f"  model: {model:.2f} s (load {first.load_seconds:.2f} s + generate {first.model_seconds:.2f} s); "
              f"outside the model: {overhead:.2f} s ({1000 * overhead / args.images:.1f} ms/image)")
        print(f"  overhead excluding the one-time model load: "
              f"{overhead / (first.seconds - first.load_seconds):.3f} of wall time")
        print(f"resume of the finished job: {resume_seconds:.3f} s = {resume_seconds / first.seconds:.4f} "
              "of the first run")
        print(f"resume_share: {resume_seconds / first.seconds:.4f}")
        print(f"overhead_share: {overhead / first.seconds:.4f}")


if __name__ == "__main__":
    main()
