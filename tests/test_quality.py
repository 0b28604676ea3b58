"""Quality flags (diffusemix_core.curation.quality) on constructed images: black, blank, low information, near-duplicates."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from diffusemix_core.curation import quality
from diffusemix_core.errors import BadArgumentError
from diffusemix_core.engine.fractals import DEFAULT_FRACTAL_DIR
from diffusemix_core.engine.images import load_image

ROOT = Path(__file__).resolve().parents[1]


def noisy(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality_: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality_)
    return np.asarray(Image.open(buffer).convert("RGB"))


def tint(image: np.ndarray, colour, weight: float = 0.35) -> np.ndarray:
    return np.clip((1 - weight) * image + weight * np.array(colour), 0, 255).astype(np.uint8)


def sepia(image: np.ndarray) -> np.ndarray:
    matrix = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
    return np.clip(image @ matrix.T, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def landscape():
    return load_image(ROOT / "examples" / "landscape.png")


@pytest.fixture(scope="module")
def textured():
    """A real-looking textured image: smooth colour field, a few shapes, fine texture and noise."""
    rng = np.random.default_rng(3)
    h, w = 240, 320
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)).astype(np.float64)
    y, x = np.mgrid[0:h, 0:w]
    field += 25 * np.sin(x / 3.0)[..., None] * np.cos(y / 5.0)[..., None]
    field[60:140, 100:180] = (210, 60, 40)
    return noisy(field, 6, rng)


# --------------------------------------------------------------------------------------------------- per image
@pytest.mark.parametrize("shape", [(64, 64), (45, 67), (512, 384), (7, 300)])
@pytest.mark.parametrize("value, expected", [
    ((128, 128, 128), ["blank"]),
    ((255, 255, 255), ["blank"]),
    ((30, 90, 200), ["blank"]),
    ((0, 0, 0), ["black"]),
    ((9, 3, 12), ["black"]),
])
def test_uniform_images(shape, value, expected):
    image = np.empty((*shape, 3), np.uint8)
    image[:] = value
    assert quality.flags(image) == expected


def test_black_ish_and_near_uniform_with_noise():
    rng = np.random.default_rng(0)
    dark = rng.integers(0, quality.BLACK_LEVEL + 1, (100, 100, 3), dtype=np.uint8)
    assert quality.flags(dark) == ["black"]
    dark[:5, :5] = 255  # 0.25% bright pixels (stars): still black
    assert quality.flags(dark) == ["black"]
    dark[:20, :20] = 255  # 4%: no longer black
    assert "black" not in quality.flags(dark)
    grey = np.full((128, 128, 3), 128, np.uint8)
    assert quality.flags(noisy(grey, 3, rng)) == ["blank"]  # pixel noise averages out on the thumbnail
    assert quality.flags(noisy(grey, 40, rng)) == []  # strong noise is not blank (it is not our business here)
    ramp = np.repeat(np.linspace(90, 170, 128)[None, :, None], 128, 0).repeat(3, 2).astype(np.uint8)
    assert quality.flags(ramp) == []  # a gradient (a sky) is not blank


def test_low_information_is_cleanvisions_entropy_check():
    two_colours = np.zeros((96, 96, 3), np.uint8)
    two_colours[:, :48] = (200, 30, 30)
    two_colours[:, 48:] = (20, 40, 200)
    assert quality.entropy(two_colours) == pytest.approx(Image.fromarray(two_colours).entropy())
    assert quality.entropy(two_colours) < quality.LOW_INFORMATION_MAX_ENTROPY
    assert quality.flags(two_colours) == ["low_information"]


def test_real_looking_images_have_no_flags(textured, landscape, photo):
    for image in (textured, landscape, photo, load_image(DEFAULT_FRACTAL_DIR / "julia_005.png")):
        assert quality.flags(image) == [], quality.entropy(image)


def test_gray_images_and_bad_input():
    assert quality.flags(np.zeros((10, 10), np.uint8)) == ["black"]
    with pytest.raises(BadArgumentError, match="uint8"):
        quality.flags(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(BadArgumentError, match="uint8"):
        quality.flags(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(BadArgumentError, match="image 1"):
        quality.near_duplicates([np.zeros((4, 4, 3), np.uint8), "not an image"])


def test_flag_names_are_stable():
    assert quality.FLAGS == ("black", "blank", "low_information", "near_duplicate")


# --------------------------------------------------------------------------------------------------- near-duplicates
def test_perturbed_copies_are_near_duplicates(textured):
    rng = np.random.default_rng(1)
    copies = [textured, noisy(textured, 4, rng), jpeg(textured, 85),
              np.clip(textured.astype(int) + 2, 0, 255).astype(np.uint8),
              np.asarray(Image.fromarray(textured).filter(ImageFilter.GaussianBlur(1)))]
    for copy in copies[1:]:
        assert quality.image_distance(textured, copy) <= quality.NEAR_DUPLICATE_MAX_DISTANCE
    assert quality.near_duplicate_groups(copies) == [[0, 1, 2, 3, 4]]
    assert quality.near_duplicates(copies) == [False, True, True, True, True]


def test_different_images_and_recolourings_are_not(textured, landscape):
    resized = np.asarray(Image.fromarray(landscape).resize(textured.shape[1::-1]))
    others = [textured, resized, sepia(textured), tint(textured, (255, 140, 0)), tint(textured, (0, 60, 255)),
              255 - textured, np.ascontiguousarray(textured[:, ::-1])]
    assert quality.near_duplicate_groups(others) == []
    assert quality.near_duplicates(others) == [False] * len(others)
    assert quality.image_distance(textured, textured) == 0.0


@pytest.mark.parametrize("shift, duplicate", [(1, True), (3, True), (6, False), (10, False)])
def test_the_threshold_is_in_levels(textured, shift, duplicate):
    """A uniform brightness shift of s levels is at distance ~s: near-duplicate up to NEAR_DUPLICATE_MAX_DISTANCE."""
    shifted = np.clip(textured.astype(int) + shift, 0, 255).astype(np.uint8)
    assert quality.image_distance(textured, shifted) == pytest.approx(shift, abs=0.6)
    assert quality.near_duplicates([textured, shifted]) == [False, duplicate]


def test_groups_mixed_and_flag_group(textured, landscape):
    rng = np.random.default_rng(2)
    black = np.zeros_like(textured)
    group = [landscape, textured, sepia(textured), noisy(landscape, 5, rng), noisy(textured, 5, rng), black,
             jpeg(landscape, 70), black.copy()]
    assert quality.near_duplicate_groups(group) == [[0, 3, 6], [1, 4], [5, 7]]
    assert quality.near_duplicates(group) == [False, False, False, True, True, False, True, True]
    assert quality.flag_group(group) == [[], [], [], ["near_duplicate"], ["near_duplicate"], ["black"],
                                         ["near_duplicate"], ["black", "near_duplicate"]]
    assert quality.near_duplicates([]) == [] and quality.flag_group([]) == []
    assert quality.near_duplicate_groups([textured]) == []
