"""Quality flags: images a reviewer should not have to look at to reject (black, blank, low information) and
generations of one source that repeat each other (near-duplicates).

Each flag is a short, stable string, stored and queried as is:

* ``black``: at least :data:`BLACK_MIN_FRACTION` of the pixels have every channel <= :data:`BLACK_LEVEL`. The
  generator retries all-black outputs (fp16 NaN), but a stored image can still be black-ish.
* ``blank``: near-uniform. On a thumbnail of :data:`BLANK_SIZE` px on the long side (a box filter, so pixel
  noise averages out), every channel's 1st-to-99th percentile range is at most :data:`BLANK_MAX_SPREAD` levels.
* ``low_information``: the entropy of the image's RGB histogram (Pillow's ``Image.entropy()``, 768 bins) is
  below :data:`LOW_INFORMATION_MAX_ENTROPY` bits; this is CleanVision's ``low_information`` check with its
  default threshold (score = 0.1 x entropy, flagged below 0.3). A posterised image with a handful of colours.
* ``near_duplicate``: within one group (the Î of one source across prompts and slots), an image whose 16 x 16 RGB
  thumbnail is within :data:`NEAR_DUPLICATE_MAX_DISTANCE` levels (mean absolute difference) of an image earlier
  in the group. The first image of each set of near-duplicates is kept unflagged, so dropping every flagged
  image keeps one of each.

:func:`flags` gives at most one of ``black`` / ``blank`` / ``low_information`` (the most specific: a black image is
also blank, a blank one also low on information). :func:`flag_group` adds ``near_duplicate``.

Why not a library. CleanVision computes its per-image properties with Pillow one-liners (``dark``: 99th
percentile of a brightness formula < 0.32; ``light``: 5th percentile > 0.95; ``low_information``: the entropy
above) and adds pandas DataFrames, dataset classes and matplotlib (about 50 MB of dependencies) on top; its
per-image property classes are internal API. Its ``dark``/``light`` would flag the "aurora" and "snowy" prompts'
legitimate night and snow scenes, so they are left out and ``black`` is stricter. Its near-duplicate check, and
imagehash's hashes (phash, dhash, ahash, whash) that it uses, hash GRAYSCALE structure: measured on the example
images, a sepia, orange or blue recolouring of an image is 0-5 bits from the original in a 64-bit phash, the
same as a JPEG re-encode; but recolouring is exactly what DiffuseMix's prompts do, and the group members share
the source's layout. imagehash's colour hash (``colorhash``) does not separate them either (2-4 bits for
re-encodes, 5-12 for recolourings, 9-14 for unrelated images). The Î of one source are aligned (same size, same
layout), so a direct comparison of small colour thumbnails is both the right measure and cheap (0.4 ms per
512² image): re-encodes, noise (sigma <= 8) and a 3 px blur measured <= 2 levels, recolourings and hue shifts
>= 5.8 (mostly >= 13), unrelated images >= 60. So this module needs only numpy and Pillow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..errors import BadArgumentError

__all__ = [
    "BLACK_LEVEL",
    "BLACK_MIN_FRACTION",
    "BLANK_MAX_SPREAD",
    "BLANK_SIZE",
    "FLAGS",
    "FLAG_BLACK",
    "FLAG_BLANK",
    "FLAG_LOW_INFORMATION",
    "FLAG_NEAR_DUPLICATE",
    "LOW_INFORMATION_MAX_ENTROPY",
    "NEAR_DUPLICATE_MAX_DISTANCE",
    "NEAR_DUPLICATE_SIZE",
    "entropy",
    "flag_group",
    "flags",
    "image_distance",
    "near_duplicate_groups",
    "near_duplicates",
]

FLAG_BLACK = "black"
FLAG_BLANK = "blank"
FLAG_LOW_INFORMATION = "low_information"
FLAG_NEAR_DUPLICATE = "near_duplicate"
FLAGS = (FLAG_BLACK, FLAG_BLANK, FLAG_LOW_INFORMATION, FLAG_NEAR_DUPLICATE)

BLACK_LEVEL = 16  # a pixel is black when its brightest channel is <= this (of 255)
BLACK_MIN_FRACTION = 0.99  # an image is black when at least this fraction of its pixels are
BLANK_SIZE = 64  # long side of the thumbnail the blank check looks at (as drift.DRIFT_SIZE)
BLANK_MAX_SPREAD = 12  # blank: every channel's 1st..99th percentile range on the thumbnail is <= this many levels
LOW_INFORMATION_MAX_ENTROPY = 3.0  # bits of the 768-bin RGB histogram; CleanVision's default (0.3 / 0.1)
NEAR_DUPLICATE_SIZE = 16  # near-duplicates are compared as NEAR_DUPLICATE_SIZE² RGB thumbnails
NEAR_DUPLICATE_MAX_DISTANCE = 4.0  # mean absolute thumbnail difference, in levels of 255, at or below which two
#                                    images are near-duplicates


def _check(image: np.ndarray, name: str = "image") -> np.ndarray:
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3)
            or (image.ndim == 3 and image.shape[2] != 3) or 0 in image.shape):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise BadArgumentError(
            f"{name} is {got}; pass a uint8 (h, w, 3) RGB or (h, w) gray array (diffusemix_core.load_image makes one)."
        )
    return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)


def _thumbnail(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Box-filtered float32 (h, w, 3) thumbnail of a uint8 RGB image; size=(width, height)."""
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX), dtype=np.float32)


def entropy(image: np.ndarray) -> float:
    """Entropy in bits of the image's RGB histogram (Pillow's ``Image.entropy``, what CleanVision measures)."""
    return float(Image.fromarray(_check(image)).entropy())


def flags(image: np.ndarray) -> list[str]:
    """The per-image flags of a uint8 (h, w, 3) image: ``[]`` or one of ``black``, ``blank``, ``low_information``."""
    image = _check(image)
    brightest = np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])  # 10x faster than max(axis=2)
    if np.count_nonzero(brightest <= BLACK_LEVEL) >= BLACK_MIN_FRACTION * brightest.size:
        return [FLAG_BLACK]
    h, w = image.shape[:2]
    scale = BLANK_SIZE / max(h, w)
    small = _thumbnail(image, (max(1, round(w * scale)), max(1, round(h * scale))))
    low, high = np.percentile(small.reshape(-1, 3), [1, 99], axis=0)
    if float((high - low).max()) <= BLANK_MAX_SPREAD:
        return [FLAG_BLANK]
    if Image.fromarray(image).entropy() < LOW_INFORMATION_MAX_ENTROPY:
        return [FLAG_LOW_INFORMATION]
    return []


def image_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference (levels of 255) of the two images' 16 x 16 RGB thumbnails; 0 for the same picture.

    Sizes may differ (each is shrunk to the same square). ``image_distance(I, Î) <= NEAR_DUPLICATE_MAX_DISTANCE``
    means the edit left the source as it was.
    """
    size = (NEAR_DUPLICATE_SIZE, NEAR_DUPLICATE_SIZE)
    return float(np.abs(_thumbnail(_check(a, "a"), size) - _thumbnail(_check(b, "b"), size)).mean())


def near_duplicate_groups(images: Sequence[np.ndarray]) -> list[list[int]]:
    """Sets of near-duplicates among ``images``, as sorted index lists of 2 or more, ordered by first index.

    Two images are linked when :func:`image_distance` <= :data:`NEAR_DUPLICATE_MAX_DISTANCE`; a set is a connected
    group of links. Meant for the Î of one source (a few dozen images): the cost is quadratic in their number.
    """
    size = (NEAR_DUPLICATE_SIZE, NEAR_DUPLICATE_SIZE)
    thumbs = np.zeros((len(images), 3 * NEAR_DUPLICATE_SIZE ** 2), np.float32)
    for i, image in enumerate(images):
        thumbs[i] = _thumbnail(_check(image, f"image {i}"), size).ravel()
    parent = list(range(len(thumbs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(1, len(thumbs)):
        close = np.abs(thumbs[:i] - thumbs[i]).mean(axis=1) <= NEAR_DUPLICATE_MAX_DISTANCE
        for j in np.flatnonzero(close):
            a, b = root(int(j)), root(i)
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(thumbs)):
        groups.setdefault(root(i), []).append(i)
    return [members for members in groups.values() if len(members) > 1]


def near_duplicates(images: Sequence[np.ndarray]) -> list[bool]:
    """For each image, whether it is a near-duplicate of an image before it (the first of each set is False)."""
    flagged = [False] * len(images)
    for members in near_duplicate_groups(images):
        for i in members[1:]:
            flagged[i] = True
    return flagged


def flag_group(images: Sequence[np.ndarray]) -> list[list[str]]:
    """:func:`flags` of every image of one group (the Î of one source), plus ``near_duplicate`` where it applies."""
    duplicates = near_duplicates(images)
    return [flags(image) + ([FLAG_NEAR_DUPLICATE] if dup else []) for image, dup in zip(images, duplicates)]
