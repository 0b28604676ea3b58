"""Masks: the paper's four halves, the extra CutMix-like box, feathered seams, caching and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from diffusemix_core.errors import BadArgumentError
from diffusemix_core.engine.masks import ALL_MASK_KINDS, EXTRA_MASK_KINDS, MASK_KINDS, make_mask, mask_to_uint8

SIZES = [(1, 1), (1, 2), (2, 3), (5, 7), (64, 48), (255, 256)]


def expected_half(kind: str, h: int, w: int) -> np.ndarray:
    """The kept region written out by hand: columns/rows on one side of width // 2 or height // 2."""
    mask = np.zeros((h, w), dtype=bool)
    if kind == "left":
        mask[:, : w // 2] = True
    elif kind == "right":
        mask[:, w // 2:] = True
    elif kind == "top":
        mask[: h // 2, :] = True
    else:
        mask[h // 2:, :] = True
    return mask


def test_kind_lists():
    assert MASK_KINDS == ("left", "right", "top", "bottom")
    assert EXTRA_MASK_KINDS == ("box",)
    assert set(ALL_MASK_KINDS) == set(MASK_KINDS) | set(EXTRA_MASK_KINDS)
    assert "box" not in MASK_KINDS


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("h,w", SIZES)
def test_halves_match_definition(kind, h, w):
    mask = make_mask(kind, h, w)
    assert mask.shape == (h, w)
    assert mask.dtype == np.bool_
    np.testing.assert_array_equal(mask, expected_half(kind, h, w))


@given(h=st.integers(1, 300), w=st.integers(1, 300))
@settings(max_examples=60, deadline=None)
def test_opposite_halves_partition_the_image(h, w):
    left, right = make_mask("left", h, w), make_mask("right", h, w)
    top, bottom = make_mask("top", h, w), make_mask("bottom", h, w)
    assert not (left & right).any() and (left | right).all()
    assert not (top & bottom).any() and (top | bottom).all()
    assert int(left.sum()) == h * (w // 2)
    assert int(top.sum()) == (h // 2) * w


@pytest.mark.parametrize("h,w", [(16, 16), (64, 48), (100, 37), (255, 256)])
def test_box_is_centred_and_covers_half(h, w):
    mask = make_mask("box", h, w)
    assert mask.dtype == np.bool_
    assert abs(mask.mean() - 0.5) < 0.06
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    # a rectangle: every row/col inside the box is fully True over the box's span
    assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
    assert abs(rows[0] - (h - 1 - rows[-1])) <= 1 and abs(cols[0] - (w - 1 - cols[-1])) <= 1
    assert not mask[0].any() and not mask[:, 0].any()  # the border holds the generated image


@pytest.mark.parametrize("kind", ALL_MASK_KINDS)
@pytest.mark.parametrize("feather", [1, 2, 7, 20])
def test_feathered_mask_is_a_ramp_around_the_same_seam(kind, feather):
    h, w = 96, 80
    soft = make_mask(kind, h, w, feather=feather)
    hard = make_mask(kind, h, w)
    assert soft.dtype == np.float32 and soft.shape == (h, w)
    assert soft.min() >= 0.0 and soft.max() <= 1.0
    np.testing.assert_array_equal(soft > 0.5, hard)  # thresholding the ramp gives the hard mask
    if kind in MASK_KINDS:
        line = soft[0] if kind in ("left", "right") else soft[:, 0]
        inside = line[(line > 0) & (line < 1)]
        # the ramp is `feather` px wide, centred on pixel boundaries: an odd width puts its two ends exactly on
        # pixel centres (values 0 and 1), so the strictly-between count is feather - 1 there
        assert inside.size == (feather if feather % 2 == 0 else feather - 1)
        diffs = np.diff(line)
        assert (diffs <= 1e-7).all() or (diffs >= -1e-7).all()  # monotone
        # symmetric ramp: the kept weight sums to the hard mask's count
        assert line.sum() == pytest.approx(float((line > 0.5).sum()), abs=1e-4)


def test_authors_twenty_pixel_seam():
    soft = make_mask("left", 4, 256, feather=20)
    row = soft[0]
    assert (row[:118] == 1).all() and (row[138:] == 0).all()
    assert row[127] > 0.5 > row[128]


def test_masks_are_cached_and_read_only():
    a = make_mask("left", 32, 32, feather=3)
    b = make_mask("left", 32, 32, feather=3)
    assert a is b
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0, 0] = 0


@pytest.mark.parametrize(
    "args,kwargs",
    [
        (("diagonal", 8, 8), {}),
        (("left", 0, 8), {}),
        (("left", 8, -1), {}),
        (("left", 8.0, 8), {}),
        (("left", True, 8), {}),
        (("left", 8, 8), {"feather": -1}),
        (("left", 8, 8), {"feather": 1.5}),
    ],
)
def test_bad_arguments(args, kwargs):
    with pytest.raises(BadArgumentError):
        make_mask(*args, **kwargs)


def test_unknown_kind_message_lists_choices():
    with pytest.raises(BadArgumentError, match="left, right, top, bottom, box"):
        make_mask("Left", 4, 4)


def test_mask_to_uint8():
    hard = make_mask("top", 4, 3)
    out = mask_to_uint8(hard)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.where(hard, 255, 0))
    soft = np.array([[0.0, 0.5, 1.0], [0.25, 0.1, 0.9]], dtype=np.float32)
    np.testing.assert_array_equal(mask_to_uint8(soft), np.rint(soft * 255).astype(np.uint8))
    with pytest.raises(BadArgumentError):
        mask_to_uint8(np.zeros((2, 2, 2), dtype=bool))
