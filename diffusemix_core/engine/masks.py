"""Concatenation masks of DiffuseMix (paper Eq. 1, Algorithm 1 line 6-7).

A mask ``M`` is an (h, w) array that is True (or 1.0) where the ORIGINAL image is kept; the hybrid image is
``M ⊙ I + (1 − M) ⊙ Î`` (see :mod:`diffusemix_core.mixing`).

* ``MASK_KINDS`` are the paper's four halves and name the half of the original that is kept: ``"left"`` keeps
  columns ``[0, width // 2)``, ``"right"`` keeps ``[width // 2, width)``, ``"top"`` keeps rows
  ``[0, height // 2)``, ``"bottom"`` keeps ``[height // 2, height)``.
* ``EXTRA_MASK_KINDS`` are never drawn unless asked for. ``"box"`` is a CutMix-like centred box covering half the
  image area (sides ``round(h / √2)`` × ``round(w / √2)``) in which the ORIGINAL is kept, the generated image
  filling the border around it: objects are usually centred, so the object stays intact while its context takes
  the generated look.
* ``feather > 0`` gives a soft seam like the authors' public code (a 20-pixel ramp): the mask is float32 in
  [0, 1] and falls linearly across a band ``feather`` pixels wide centred on the seam. Per pixel centre at signed
  distance ``d`` (pixels, positive inside the kept region) the value is ``clip(d / feather + 0.5, 0, 1)``; with
  ``feather = 0`` this is the bool step ``d > 0``. Pixel centres sit at half-integer distances from the seam, so an
  even ``feather`` gives ``feather`` intermediate values and an odd one ``feather − 1`` (``feather = 1`` is the
  step as float32).

Masks are cached per (kind, height, width, feather) and returned READ-ONLY: copy before modifying.
"""

from __future__ import annotations

from functools import lru_cache
import math

import numpy as np

from ..checks import check_int
from ..errors import BadArgumentError

__all__ = ["MASK_KINDS", "EXTRA_MASK_KINDS", "ALL_MASK_KINDS", "make_mask", "mask_to_uint8"]

MASK_KINDS: tuple[str, ...] = ("left", "right", "top", "bottom")
EXTRA_MASK_KINDS: tuple[str, ...] = ("box",)
ALL_MASK_KINDS: tuple[str, ...] = MASK_KINDS + EXTRA_MASK_KINDS


def check_mask_kind(kind: str) -> str:
    """Return ``kind`` if it names a mask kind (drawn or extra), else raise BadArgumentError."""
    if kind not in ALL_MASK_KINDS:
        raise BadArgumentError(f"Unknown mask kind {kind!r}; use one of {', '.join(ALL_MASK_KINDS)}.")
    return kind


def make_mask(kind: str, height: int, width: int, *, feather: int = 0) -> np.ndarray:
    """Return the (height, width) mask of ``kind``: bool, or float32 in [0, 1] when ``feather > 0``.

    True / 1.0 marks pixels where the original image is kept. The array is cached and read-only.
    """
    check_mask_kind(kind)
    height = check_int("height", height, minimum=1)
    width = check_int("width", width, minimum=1)
    feather = check_int("feather", feather, minimum=0)
    return _cached_mask(kind, height, width, feather)


def _ramp(distance: np.ndarray, feather: int) -> np.ndarray:
    """Kept-weight from signed distance to the seam: a step (bool) or a linear ramp `feather` px wide."""
    if feather == 0:
        return distance > 0
    return np.clip(distance / feather + 0.5, 0.0, 1.0).astype(np.float32)


@lru_cache(maxsize=256)
def _cached_mask(kind: str, height: int, width: int, feather: int) -> np.ndarray:
    xs = np.arange(width, dtype=np.float64) + 0.5  # pixel centres
    ys = np.arange(height, dtype=np.float64) + 0.5
    if kind in ("left", "right"):
        seam = width // 2
        dist = (seam - xs) if kind == "left" else (xs - seam)
        row = _ramp(dist, feather)
        mask = np.broadcast_to(row[None, :], (height, width))
    elif kind in ("top", "bottom"):
        seam = height // 2
        dist = (seam - ys) if kind == "top" else (ys - seam)
        col = _ramp(dist, feather)
        mask = np.broadcast_to(col[:, None], (height, width))
    else:  # box
        box_h = max(1, round(height / math.sqrt(2)))
        box_w = max(1, round(width / math.sqrt(2)))
        top, left = (height - box_h) // 2, (width - box_w) // 2
        dist_y = np.minimum(ys - top, top + box_h - ys)
        dist_x = np.minimum(xs - left, left + box_w - xs)
        mask = np.minimum(_ramp(dist_y, feather)[:, None], _ramp(dist_x, feather)[None, :])
    mask = np.ascontiguousarray(mask)
    mask.setflags(write=False)
    return mask


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """(h, w) uint8 view for display / PNG: 255 where the original is kept, ramp values rounded for float masks."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise BadArgumentError(f"mask must be 2-D (h, w), got shape {mask.shape}; pass one mask at a time.")
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8) * np.uint8(255)
    return np.rint(np.clip(mask.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
