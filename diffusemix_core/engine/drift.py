"""Drift score: how far the generated image Î strayed from the structure of the original I.

DiffuseMix wants filter-like edits that keep the image's layout (paper §3.2); a generation that replaced the
scene is a bad augmentation. The score compares STRUCTURE, not colour:

1. both images to grayscale (ITU-R 601 luma) and to the same low resolution: 64 px on the long side of the
   original, keeping its aspect ratio (box filter when shrinking), so the score is cheap (~1 ms) and blind to
   fine texture and noise;
2. Sobel gradient magnitude of each;
3. drift = clip(1 − r, 0, 1) with r the Pearson correlation of the two edge maps.

So an identical image scores 0, a recoloured one (sunset, autumn, ...) stays low, and an unrelated image
(another photo, noise, a fractal) scores near 1 (uncorrelated edges give r ≈ 0). If neither image has any edge
(both flat) the score is 0; if only one is flat it is 1.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import BadArgumentError

__all__ = ["drift_score", "DRIFT_SIZE"]

DRIFT_SIZE = 64
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _gray(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 3:
        return image.astype(np.float32) @ _LUMA
    if image.ndim == 2:
        return image.astype(np.float32)
    raise BadArgumentError(f"{name} must be an (h, w, 3) or (h, w) image, got shape {image.shape}.")


def _small(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float (h, w) map to size=(width, height): box filter to shrink, bilinear to enlarge."""
    if gray.shape[::-1] == size:
        return gray
    shrinking = size[0] <= gray.shape[1] and size[1] <= gray.shape[0]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    image = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32))
    return np.asarray(image.resize(size, resample), dtype=np.float32)


def _sobel_magnitude(gray: np.ndarray) -> np.ndarray:
    padded = np.pad(gray, 1, mode="edge")
    gx = ((padded[:-2, 2:] + 2 * padded[1:-1, 2:] + padded[2:, 2:])
          - (padded[:-2, :-2] + 2 * padded[1:-1, :-2] + padded[2:, :-2]))
    gy = ((padded[2:, :-2] + 2 * padded[2:, 1:-1] + padded[2:, 2:])
          - (padded[:-2, :-2] + 2 * padded[:-2, 1:-1] + padded[:-2, 2:]))
    return np.hypot(gx, gy)


def drift_score(original: np.ndarray, generated: np.ndarray) -> float:
    """Structural drift in [0, 1] between I and Î (sizes may differ): ~0 same layout, high unrelated content."""
    gray_i, gray_g = _gray(original, "original"), _gray(generated, "generated")
    h, w = gray_i.shape
    scale = DRIFT_SIZE / max(h, w)
    size = (max(3, round(w * scale)), max(3, round(h * scale)))
    edges_i = _sobel_magnitude(_small(gray_i, size)).ravel().astype(np.float64)
    edges_g = _sobel_magnitude(_small(gray_g, size)).ravel().astype(np.float64)
    edges_i -= edges_i.mean()
    edges_g -= edges_g.mean()
    norm_i, norm_g = float(np.sqrt(edges_i @ edges_i)), float(np.sqrt(edges_g @ edges_g))
    flat_i, flat_g = norm_i < 1e-6 * edges_i.size, norm_g < 1e-6 * edges_g.size
    if flat_i and flat_g:
        return 0.0
    if flat_i or flat_g:
        return 1.0
    r = float(edges_i @ edges_g) / (norm_i * norm_g)
    return float(np.clip(1.0 - r, 0.0, 1.0))
