"""Samples per second of the online DiffuseMix dataset at 224², one worker, against reading exported PNG files.

    python -m bench.dataset [--images 48] [--per-image 2] [--samples 192] [--repeat 3] [--size 224] [--seed 0]

Setup (not timed): `--images` photo-like source images at Flowers102's usual size (500×375 and 375×500: smooth
gradients, shapes and a little noise, so their PNGs compress like photos'), three classes; a workspace made by the
real bulk run on the untrained ``tiny-random`` model, whose outputs are replaced by a full-resolution filter-like
edit of the source (colour filter + fresh noise; see ``FilterLikeGenerator``: the untrained model's own Î, 64-px
outputs resized up, are so smooth that their PNGs decode unrealistically fast; ``--tiny-output`` keeps them), every
augmentation approved, then exported with ``Workspace.export(include_originals=True)``.

Timed, in this one process (what one DataLoader worker does per sample), the same number of samples each, in a
seeded random order, the variants taking turns within each repeat (best of ``--repeat``):

* ``files``: the export arm's way, ``training.ImageFiles`` over the exported PNGs (originals and augmentations):
  decode one PNG, resize + centre-crop to 224², to a float tensor;
* ``online p=0.5`` (the default), ``online p=1`` (every item re-mixed) and ``online jsd`` (clean + two re-mixes):
  ``training.DiffuseMixDataset``: one SQLite lookup, I (and Î when re-mixing) read at 224² from the training-size
  cache, hybrid and blend with the fractal fitted to 224², to a float tensor. The cache is filled by a first epoch
  over every item before the timed runs, and that epoch's rate is printed too (it decodes full-size PNGs);
* ``online p=0.5, no cache``: ``cache=False``: decode I (and Î) at full size, hybrid there, one resize + crop.

A breakdown follows: one PNG decode, one resize + crop, and the mixing itself, per sample. The last line is
``online_vs_files: X``: online at the default p=0.5 over files (1.0 = as fast; above 1 = faster).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.generation import GenerationSettings
from diffusemix_core.engine.pix2pix import Pix2PixGenerator
from diffusemix_core.engine.images import load_image
from diffusemix_core.engine.masks import make_mask
from diffusemix_core.engine.mixing import blend, hybrid
from diffusemix_core.training.dataset import DiffuseMixDataset, ImageFiles, resize_center_crop, to_tensor
from diffusemix_core.bulk.options import AugmentOptions
from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.workspace.folder import Workspace

from bench.mixing import best_rates

CLASSES = ("daisy", "rose", "tulip")


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photo-like uint8 image: colour gradients, a few filled shapes, mild sensor noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    img = np.stack([base[0] + 80 * np.sin(x / w * rng.uniform(1, 4)), base[1] + 80 * np.cos(y / h * rng.uniform(1, 4)),
                    base[2] + 60 * np.sin((x + y) / (w + h) * rng.uniform(1, 6))], axis=-1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, min(h, w) / 3)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def filter_like(image: np.ndarray, seed: int) -> np.ndarray:
    """A full-resolution, photo-like stand-in for a real Î: a random colour filter and fresh sensor noise."""
    rng = np.random.default_rng(seed)
    mixing = np.eye(3) * rng.uniform(0.6, 1.0, 3) + rng.uniform(0.0, 0.25, (3, 3))
    edited = image.astype(np.float32) @ mixing.T.astype(np.float32) + rng.uniform(-30, 30, 3)
    return np.clip(edited + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


class FilterLikeGenerator:
    """The real tiny-random generator (so the bulk run takes its real path), each output replaced by
    :func:`filter_like` of the source. The untrained model's own Î are 64-px outputs resized up, much smoother than a
    real InstructPix2Pix Î, so their PNGs decode unrealistically fast and would flatter the online path."""

    def __init__(self, settings: GenerationSettings) -> None:
        self.inner = Pix2PixGenerator(settings)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def generate(self, requests, **kwargs):
        results = self.inner.generate(requests, **kwargs)
        return [dataclasses.replace(result, image=filter_like(request.image, request.seed))
                for result, request in zip(results, requests)]


def build(root: Path, images: int, per_image: int, seed: int, tiny_output: bool) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    train = root / "train"
    for i in range(images):
        folder = train / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        h, w = (375, 500) if i % 2 == 0 else (500, 375)
        Image.fromarray(photo(rng, h, w)).save(folder / f"{i:04d}.jpg", quality=92)
    ws = Workspace(root / "ws")
    settings = GenerationSettings(model="tiny-random", steps=2, resolution=64, device="cpu")
    run_augment(ws, train, AugmentOptions(per_image=per_image, seed=seed, settings=settings),
                generator=None if tiny_output else FilterLikeGenerator(settings))
    ws.review("approved")
    ws.export(root / "export", status="approved", include_originals=True)
    return root / "ws", root / "export"


def per_call_ms(fn: Callable[[], object], n: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1000


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=48, help="source images (default 48)")
    parser.add_argument("--per-image", type=int, default=2, help="cached Î per source (default 2)")
    parser.add_argument("--samples", type=int, default=192, help="samples per timed run (default 192)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best counts (default 3)")
    parser.add_argument("--size", type=int, default=224, help="output side (default 224)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny-output", action="store_true",
                        help="keep the untrained model's own (smooth, upscaled) Î instead of the filter-like stand-in")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # one worker: one core

    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        t0 = time.perf_counter()
        ws, export = build(Path(tmp), args.images, args.per_image, args.seed, args.tiny_output)
        setup_s = time.perf_counter() - t0
        fractals = FractalLibrary.default()
        files = sorted(p for p in export.rglob("*.png"))
        file_set = ImageFiles([(p, 0) for p in files], size=args.size)
        online = {p: DiffuseMixDataset(ws, p=p, size=args.size, fractals=fractals, seed=args.seed) for p in (0.5, 1.0)}
        jsd = DiffuseMixDataset(ws, jsd=True, size=args.size, fractals=fractals, seed=args.seed)
        uncached = DiffuseMixDataset(ws, p=0.5, size=args.size, fractals=fractals, seed=args.seed, cache=False)
        t0 = time.perf_counter()
        for i in range(len(online[1.0])):  # the first epoch: every I and Î decoded once, the cache filled
            online[1.0][i]
        first_epoch_rate = len(online[1.0]) / (time.perf_counter() - t0)
        rng = np.random.default_rng(args.seed)
        file_order = rng.integers(0, len(file_set), args.samples)
        item_order = rng.integers(0, len(jsd), args.samples)

        def read(ds, order):
            return lambda: [ds[int(i)] for i in order]

        rates = best_rates({
            "files": read(file_set, file_order),
            "online p=0.5": read(online[0.5], item_order),
            "online p=1": read(online[1.0], item_order),
            "online jsd (3 views)": read(jsd, item_order),
            "online p=0.5, no cache": read(uncached, item_order),
        }, args.samples, args.repeat)

        # where the time goes, per sample
        sample_files = files[:: max(1, len(files) // 20)]
        decode_ms = sum(per_call_ms(lambda f=f: load_image(f), 3) for f in sample_files) / len(sample_files)
        source = load_image(files[0])
        generated = np.ascontiguousarray(source[::-1])
        mask = make_mask("left", *source.shape[:2])
        fitted = fractals.fit(fractals.ids[0], args.size, args.size)
        resize_ms = per_call_ms(lambda: resize_center_crop(source, args.size), 30)
        mix_ms = per_call_ms(lambda: blend(resize_center_crop(hybrid(source, generated, mask), args.size), fitted,
                                           0.2), 30) - resize_ms
        tensor_ms = per_call_ms(lambda: to_tensor(fitted), 30)

    print(f"DiffuseMix dataset vs exported files, {args.size}² output, one process, {args.samples} samples per run, "
          f"best of {args.repeat}; {args.images} sources of 500×375/375×500 px, {args.per_image} Î each, "
          f"{len(files)} exported PNGs; torch {torch.__version__}, numpy {np.__version__}, Python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs (setup {setup_s:.1f} s, not timed)")
    header = f"{'variant':<22} | {'samples/s':>9} | {'ms/sample':>9} | {'vs files':>8}"
    print(header)
    print("-" * len(header))
    for name, rate in rates.items():
        print(f"{name:<22} | {rate:>9.1f} | {1000 / rate:>9.2f} | {rate / rates['files']:>7.2f}x")
    print(f"per sample: one PNG decode {decode_ms:.2f} ms, one resize+crop {resize_ms:.2f} ms, hybrid + blend "
          f"{mix_ms:.2f} ms, to tensor {tensor_ms:.2f} ms (files: 1 decode; online: 1 + p decodes)")
    print(f"first epoch of online p=1 (fills the training-size cache): {first_epoch_rate:.1f} samples/s")
    ratio = rates["online p=0.5"] / rates["files"]
    print(f"online_vs_files: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
