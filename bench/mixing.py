"""Throughput of hybrid + blend (paper Eq. 1-2) against the authors' per-image way of doing it.

    python -m bench.mixing [--sizes 256 512] [--images 32] [--repeat 5] [--seed 0]   # from the repo root
    python bench/mixing.py ...      # the same, once diffusemix_core is importable (installed, or PYTHONPATH=.)

Reference ("authors' code"): written the way the public DiffuseMix code (augment/utils.py) mixes one image: the
PIL images become float32 arrays, a float mask with a 20-pixel ramp is built with linspace/tile/hstack and
tiled to (h, w, 3) on every call, (1 − M)·I + M·Î, clip, cast to uint8, back to PIL; then the fractal (a 256²
PIL image, as their loader keeps them) is resized with PIL for each image and blended in float32, clipped, cast.

Ours: ``make_mask`` (cached), ``hybrid`` (bool: one masked copy of 3-byte pixels), ``FractalLibrary.fit``
(resized once per size, cached) and ``blend`` (exact lookup table). Both paths get the same images, masks kinds,
fractals and λ in the same run; ours takes uint8 arrays (what the engine holds), the reference PIL images (what
theirs holds). Pixels are compared: with a hard seam both must agree within 1 (the reference truncates where we
round); with the 20-px ramp, outside the seam band likewise, and the band difference is reported.

The last line is ``speedup_vs_reference: X`` at the largest size (ours, default hard seam, per image).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from typing import Callable

import numpy as np
from PIL import Image

from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.masks import MASK_KINDS, make_mask
from diffusemix_core.engine.mixing import blend, hybrid

LAM = 0.2


# ------------------------------------------------------------------------------------- the reference path
def reference_combine(original_img: Image.Image, augmented_img: Image.Image, kind: str,
                      blend_width: int = 20) -> Image.Image:
    """The authors' combine_images, with the kind chosen by the caller (theirs draws it inside) and flips for
    right/bottom so that every kind of ours has a counterpart. Their mask is the GENERATED weight."""
    width, height = original_img.size
    if kind in ("top", "bottom"):
        mask = np.linspace(0, 1, blend_width).reshape(-1, 1)
        mask = np.tile(mask, (1, width))
        mask = np.vstack([np.zeros((height // 2 - blend_width // 2, width)), mask,
                          np.ones((height // 2 - blend_width // 2 + blend_width % 2, width))])
    else:
        mask = np.linspace(0, 1, blend_width).reshape(1, -1)
        mask = np.tile(mask, (height, 1))
        mask = np.hstack([np.zeros((height, width // 2 - blend_width // 2)), mask,
                          np.ones((height, width // 2 - blend_width // 2 + blend_width % 2))])
    if kind == "right":
        mask = mask[:, ::-1]
    elif kind == "bottom":
        mask = mask[::-1, :]
    mask = np.tile(mask[:, :, np.newaxis], (1, 1, 3))
    original_array = np.array(original_img, dtype=np.float32) / 255.0
    augmented_array = np.array(augmented_img, dtype=np.float32) / 255.0
    blended_array = (1 - mask) * original_array + mask * augmented_array
    blended_array = np.clip(blended_array * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(blended_array)


def reference_blend(base_img: Image.Image, overlay_img: Image.Image, alpha: float = LAM) -> Image.Image:
    """The authors' blend_images_with_resize."""
    overlay_img_resized = overlay_img.resize(base_img.size)
    base_array = np.array(base_img, dtype=np.float32)
    overlay_array = np.array(overlay_img_resized, dtype=np.float32)
    blended_array = (1 - alpha) * base_array + alpha * overlay_array
    blended_array = np.clip(blended_array, 0, 255).astype(np.uint8)
    return Image.fromarray(blended_array)


# ------------------------------------------------------------------------------------------------ harness
def best_rates(runs: dict[str, Callable[[], object]], count: int, repeat: int) -> dict[str, float]:
    """Images per second of the fastest of `repeat` runs of each variant (after one warm-up run each).

    The variants take turns within each repeat, so a burst of load on a shared machine hits them alike."""
    best = {name: math.inf for name in runs}
    for run in runs.values():
        run()
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: count / seconds for name, seconds in best.items()}


def bench_size(size: int, count: int, repeat: int, library: FractalLibrary, rng: np.random.Generator) -> dict:
    originals = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    kinds = [MASK_KINDS[i] for i in rng.integers(0, len(MASK_KINDS), count)]
    fractal_ids = [library.ids[i] for i in rng.integers(0, len(library), count)]
    pil_originals = [Image.fromarray(a) for a in originals]
    pil_generated = [Image.fromarray(a) for a in generated]
    pil_fractals = {fid: Image.fromarray(library.get(fid)) for fid in set(fractal_ids)}

    def reference(blend_width: int) -> list[Image.Image]:
        return [reference_blend(reference_combine(pil_originals[i], pil_generated[i], kinds[i], blend_width),
                                pil_fractals[fractal_ids[i]]) for i in range(count)]

    def ours(feather: int) -> list[np.ndarray]:
        out = []
        for i in range(count):
            mask = make_mask(kinds[i], size, size, feather=feather)
            mixed = hybrid(originals[i], generated[i], mask)
            out.append(blend(mixed, library.fit(fractal_ids[i], size, size), LAM))
        return out

    def ours_batch() -> np.ndarray:  # one call per stage for the whole batch
        masks = np.stack([make_mask(k, size, size) for k in kinds])
        fractals = np.stack([library.fit(f, size, size) for f in fractal_ids])
        return blend(hybrid(originals, generated, masks), fractals, LAM)

    # correctness first: same inputs, (nearly) the same pixels
    ref_hard = np.stack([np.asarray(im) for im in reference(0)])
    ours_hard = np.stack(ours(0))
    np.testing.assert_array_equal(ours_batch(), ours_hard)
    diff_hard = np.abs(ref_hard.astype(int) - ours_hard)
    ref_soft = np.stack([np.asarray(im) for im in reference(20)])
    ours_soft = np.stack(ours(20))
    diff_soft = np.abs(ref_soft.astype(int) - ours_soft)
    band = np.zeros((count, size, size), dtype=bool)
    seam = size // 2
    for i, kind in enumerate(kinds):
        if kind in ("left", "right"):
            band[i, :, seam - 10:seam + 10] = True
        else:
            band[i, seam - 10:seam + 10, :] = True
    outside = diff_soft[~band]
    assert diff_hard.max() <= 1, f"hard seam differs by {diff_hard.max()}"
    assert outside.max() <= 1, f"ramp paths differ by {outside.max()} outside the seam band"

    rates = best_rates({"reference": lambda: reference(20), "ours": lambda: ours(0),
                        "ours_feather20": lambda: ours(20), "ours_batch": ours_batch}, count, repeat)
    return {
        "size": size,
        **rates,
        "max_diff_hard": int(diff_hard.max()),
        "frac_diff_hard": float((diff_hard > 0).mean()),
        "max_diff_band": int(diff_soft[band].max()),
    }


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--images", type=int, default=32, help="images per size and run (default 32)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs; the best counts (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    library = FractalLibrary.default()
    rng = np.random.default_rng(args.seed)
    rows = [bench_size(s, args.images, args.repeat, library, rng) for s in args.sizes]

    print(f"hybrid + blend, λ={LAM}, {args.images} images per size, best of {args.repeat}; "
          f"numpy {np.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs")
    header = (f"{'size':>6} | {'reference img/s':>15} | {'ours img/s':>10} | {'speedup':>7} | "
              f"{'ours feather=20':>15} | {'speedup':>7} | {'ours batch':>10} | {'max|Δ| hard':>11} | "
              f"{'px Δ≠0':>6} | {'max|Δ| ramp band':>16}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['size']:>5}² | {r['reference']:>15.1f} | {r['ours']:>10.1f} | "
              f"{r['ours'] / r['reference']:>6.1f}x | {r['ours_feather20']:>15.1f} | "
              f"{r['ours_feather20'] / r['reference']:>6.1f}x | {r['ours_batch']:>10.1f} | "
              f"{r['max_diff_hard']:>11} | {r['frac_diff_hard']:>6.1%} | {r['max_diff_band']:>16}")
    print("(max|Δ| hard: ours vs reference with a hard seam — the reference truncates, ours rounds; "
          "ramp band: the 20 px where the two ramps' shapes differ)")
    speedup = rows[-1]["ours"] / rows[-1]["reference"]
    print(f"speedup_vs_reference: {speedup:.1f}")
    return speedup


if __name__ == "__main__":
    main()
