"""Drift score: ~0 for the same layout (even recoloured), high for unrelated content, always in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageDraw

from diffusemix_core.engine.drift import drift_score
from diffusemix_core.errors import BadArgumentError
from diffusemix_core.engine.fractals import generate_fractal
from diffusemix_core.engine.masks import make_mask
from diffusemix_core.engine.mixing import hybrid


def scene(seed: int, h: int = 120, w: int = 160) -> np.ndarray:
    """A photo-like test picture: a sky gradient and a few random shapes."""
    rng = np.random.default_rng(seed)
    sky = np.linspace(60, 200, h)[:, None, None] * np.array([0.6, 0.8, 1.0])
    img = Image.fromarray(np.broadcast_to(sky, (h, w, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, w - 20), rng.integers(0, h - 20)
        x1, y1 = x0 + rng.integers(10, 60), y0 + rng.integers(10, 50)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return np.asarray(img).copy()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return scene(0)


def test_identical_is_zero(photo):
    assert drift_score(photo, photo) < 1e-6


def test_filter_like_edits_drift_little(photo):
    rng = np.random.default_rng(1)
    warm = np.clip(photo.astype(float) * [1.25, 0.95, 0.6] + 15, 0, 255).astype(np.uint8)  # "sunset"
    noisy = np.clip(photo + rng.normal(0, 12, photo.shape), 0, 255).astype(np.uint8)
    soft = np.asarray(Image.fromarray(photo).resize((80, 60)).resize((160, 120), Image.Resampling.BICUBIC))
    for edited in (warm, noisy, soft):
        assert drift_score(photo, edited) < 0.25


def test_unrelated_content_drifts_a_lot(photo):
    rng = np.random.default_rng(2)
    noise = rng.integers(0, 256, photo.shape, dtype=np.uint8)
    fractal = np.asarray(Image.fromarray(generate_fractal(4, 64)).resize((160, 120)))
    assert drift_score(photo, noise) > 0.5
    assert drift_score(photo, fractal) > 0.5
    assert drift_score(photo, scene(9)) > 0.5
    other_noise = rng.integers(0, 256, photo.shape, dtype=np.uint8)
    assert drift_score(noise, other_noise) > 0.5


def test_half_replaced_is_in_between(photo):
    other = scene(5)
    half = hybrid(photo, other, make_mask("left", *photo.shape[:2]))
    d_half, d_other = drift_score(photo, half), drift_score(photo, other)
    assert 0.05 < d_half < d_other


def test_sizes_may_differ_and_gray_is_accepted(photo):
    small = np.asarray(Image.fromarray(photo).resize((80, 60), Image.Resampling.BOX))
    assert drift_score(photo, small) < 0.15
    gray = photo.mean(axis=2).astype(np.uint8)
    assert drift_score(photo, gray) < 0.1
    tiny = photo[:2, :2]
    assert 0.0 <= drift_score(tiny, tiny[::-1]) <= 1.0


def test_flat_images():
    flat = np.full((32, 32, 3), 128, np.uint8)
    assert drift_score(flat, np.full((32, 32, 3), 7, np.uint8)) == 0.0
    assert drift_score(flat, scene(3, 32, 32)) == 1.0


@given(a=arrays(np.uint8, (12, 17, 3)), b=arrays(np.uint8, (12, 17, 3)))
@settings(max_examples=50, deadline=None)
def test_always_in_unit_interval_and_symmetric(a, b):
    score = drift_score(a, b)
    assert 0.0 <= score <= 1.0
    assert score == pytest.approx(drift_score(b, a), abs=1e-9)


def test_bad_shapes():
    with pytest.raises(BadArgumentError):
        drift_score(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.uint8))
