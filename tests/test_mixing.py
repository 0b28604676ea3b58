"""hybrid and blend against the paper's formulas (Eq. 1, 2) on random data, single images and batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from diffusemix_core.errors import BadArgumentError
from diffusemix_core.engine.masks import ALL_MASK_KINDS, make_mask
from diffusemix_core.engine.mixing import _blend_plan, blend, check_lam_range, hybrid

dims = st.integers(1, 12)
FAST = settings(max_examples=80, deadline=None)


@st.composite
def image_batch(draw, batch: bool):
    n = draw(st.integers(1, 3)) if batch else None
    h, w = draw(dims), draw(dims)
    shape = ((n,) if batch else ()) + (h, w, 3)
    a = draw(arrays(np.uint8, shape))
    b = draw(arrays(np.uint8, shape))
    return a, b


def hybrid_formula(original, generated, mask):
    """Eq. 1 in float64: M ⊙ I + (1 − M) ⊙ Î (the exact value before rounding)."""
    m = np.asarray(mask, dtype=np.float64)[..., None]
    return m * original.astype(np.float64) + (1.0 - m) * generated.astype(np.float64)


def assert_nearest(result, exact):
    """result is exact rounded to nearest; only values within float32 error of a .5 tie may go either way."""
    assert result.dtype == np.uint8
    diff = np.abs(result.astype(np.float64) - exact)
    assert diff.max() <= 0.5 + 1e-3
    clear = np.abs(exact - np.floor(exact) - 0.5) > 1e-3
    np.testing.assert_array_equal(result[clear], np.rint(exact[clear]).astype(np.uint8))


@pytest.mark.parametrize("batch", [False, True])
@given(data=st.data())
@FAST
def test_hybrid_bool_mask_equals_formula(batch, data):
    original, generated = data.draw(image_batch(batch))
    mask_shape = original.shape[:-1] if data.draw(st.booleans()) else original.shape[-3:-1]
    mask = data.draw(arrays(np.bool_, mask_shape))
    result = hybrid(original, generated, mask)
    assert result.shape == original.shape and result.dtype == np.uint8
    np.testing.assert_array_equal(result, hybrid_formula(original, generated, mask).astype(np.uint8))
    np.testing.assert_array_equal(result, np.where(np.broadcast_to(mask, original.shape[:-1])[..., None],
                                                   original, generated))


@pytest.mark.parametrize("batch", [False, True])
@given(data=st.data())
@FAST
def test_hybrid_float_mask_rounds_to_nearest(batch, data):
    original, generated = data.draw(image_batch(batch))
    mask_shape = original.shape[:-1] if data.draw(st.booleans()) else original.shape[-3:-1]
    mask = data.draw(arrays(np.float32, mask_shape, elements=st.floats(0, 1, width=32)))
    result = hybrid(original, generated, mask)
    assert result.shape == original.shape
    assert_nearest(result, hybrid_formula(original, generated, mask))


@pytest.mark.parametrize("kind", ALL_MASK_KINDS)
@pytest.mark.parametrize("feather", [0, 20])
def test_hybrid_with_real_masks(kind, feather):
    rng = np.random.default_rng(7)
    original = rng.integers(0, 256, (2, 61, 80, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (2, 61, 80, 3), dtype=np.uint8)
    mask = make_mask(kind, 61, 80, feather=feather)  # read-only, shared by the batch
    result = hybrid(original, generated, mask)
    assert_nearest(result, hybrid_formula(original, generated, mask))
    for i in range(2):  # batch == one image at a time
        np.testing.assert_array_equal(result[i], hybrid(original[i], generated[i], mask))
    if feather == 0 and kind == "left":
        np.testing.assert_array_equal(result[:, :, :40], original[:, :, :40])
        np.testing.assert_array_equal(result[:, :, 40:], generated[:, :, 40:])


def blend_formula(h, f, lam):
    """Eq. 2 in float64, rounded half to even."""
    return np.rint((1.0 - lam) * h.astype(np.float64) + lam * f.astype(np.float64)).astype(np.uint8)


@pytest.mark.parametrize("batch", [False, True])
@given(data=st.data(), lam=st.floats(0.0, 1.0))
@FAST
def test_blend_is_bit_exact(batch, data, lam):
    h, f = data.draw(image_batch(batch))
    result = blend(h, f, lam)
    assert result.shape == h.shape and result.dtype == np.uint8
    np.testing.assert_array_equal(result, blend_formula(h, f, lam))


LAMS = (0.2, 0.5, 1 / 3, 0.0, 1.0, 0.1, 0.3, 0.15)


def test_both_blend_kernels_are_exercised():
    # the float32 kernel is used where proven exact for λ, the lookup table elsewhere; cover both
    assert {_blend_plan(lam)[1] for lam in LAMS} == {True, False}


@pytest.mark.parametrize("lam", LAMS)
def test_blend_all_pixel_pairs(lam):
    values = np.arange(256, dtype=np.uint8)
    h = np.repeat(values, 256).reshape(256, 256, 1).repeat(3, axis=2)
    f = np.tile(values, 256).reshape(256, 256, 1).repeat(3, axis=2)
    np.testing.assert_array_equal(blend(h, f, lam), blend_formula(h, f, lam))
    batch = np.stack([h, f])  # and as a batch sharing one fractal (the per-image loop of the float kernel)
    np.testing.assert_array_equal(blend(batch, f, lam), blend_formula(batch, f[None], lam))


def test_blend_broadcasts_one_fractal_over_a_batch():
    rng = np.random.default_rng(3)
    hybrids = rng.integers(0, 256, (4, 9, 11, 3), dtype=np.uint8)
    fractal = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    for lam in (0.2, 0.1):
        result = blend(hybrids, fractal, lam)
        for i in range(4):
            np.testing.assert_array_equal(result[i], blend(hybrids[i], fractal, lam))


def test_blend_endpoints_and_types():
    rng = np.random.default_rng(4)
    h = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    f = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(blend(h, f, 0), h)
    np.testing.assert_array_equal(blend(h, f, 1), f)
    np.testing.assert_array_equal(blend(h, f, np.float32(0.25)), blend_formula(h, f, 0.25))


def test_outputs_are_new_arrays_and_inputs_untouched():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    a0, b0 = a.copy(), b.copy()
    a.setflags(write=False)
    out = hybrid(a, b, make_mask("left", 8, 8))
    out2 = blend(out, b, 0.2)
    assert not np.shares_memory(out, a) and not np.shares_memory(out, b) and not np.shares_memory(out2, out)
    out[:] = 0
    out2[:] = 0
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


def test_non_contiguous_inputs():
    rng = np.random.default_rng(6)
    big = rng.integers(0, 256, (10, 20, 3), dtype=np.uint8)
    a, b = big[:, ::2], big[:, 1::2]
    mask = make_mask("top", 10, 10)
    np.testing.assert_array_equal(hybrid(a, b, mask), np.where(mask[..., None], a, b))
    np.testing.assert_array_equal(blend(a, b, 0.3), blend_formula(a, b, 0.3))


@pytest.mark.parametrize("lam", [-0.01, 1.0001, math.nan, math.inf, -math.inf, "0.2", None, True])
def test_lambda_out_of_range_is_an_error(lam):
    img = np.zeros((2, 2, 3), dtype=np.uint8)
    with pytest.raises(BadArgumentError, match="lambda"):
        blend(img, img, lam)


def test_shape_and_dtype_errors():
    img = np.zeros((4, 5, 3), dtype=np.uint8)
    with pytest.raises(BadArgumentError):
        hybrid(img, np.zeros((4, 6, 3), dtype=np.uint8), np.ones((4, 5), bool))
    with pytest.raises(BadArgumentError):
        hybrid(img, img, np.ones((5, 4), bool))
    with pytest.raises(BadArgumentError):
        hybrid(img.astype(np.float32), img, np.ones((4, 5), bool))
    with pytest.raises(BadArgumentError):
        hybrid(img[..., :2], img[..., :2], np.ones((4, 5), bool))
    with pytest.raises(BadArgumentError, match=r"\[0, 1\]"):
        hybrid(img, img, np.full((4, 5), 1.5, np.float32))
    with pytest.raises(BadArgumentError):
        hybrid(img, img, np.full((4, 5), np.nan, np.float32))
    with pytest.raises(BadArgumentError):
        blend(img, np.zeros((4, 4, 3), np.uint8), 0.2)
    with pytest.raises(BadArgumentError):
        blend(np.zeros((2, 4, 5, 3), np.uint8), np.zeros((3, 4, 5, 3), np.uint8), 0.2)


def test_pure_modules_do_not_import_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import diffusemix_core.errors, diffusemix_core.engine.images, diffusemix_core.engine.masks, "
            "diffusemix_core.engine.mixing, diffusemix_core.engine.fractals, diffusemix_core.engine.prompts, diffusemix_core.engine.drift; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'gradio') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("lam, expected", [(0.2, (0.2, 0.2)), (0, (0.0, 0.0)), (np.float32(0.5), (0.5, 0.5)),
                                           ((0.1, 0.3), (0.1, 0.3)), ([0.4, 0.4], (0.4, 0.4))])
def test_check_lam_range_accepts_a_number_or_an_ordered_pair(lam, expected):
    assert check_lam_range(lam) == pytest.approx(expected)


@pytest.mark.parametrize("lam, needle", [((0.3, 0.1), "reversed"), ((0.1, 2.0), "2.0"), ("0.2", "'0.2'"),
                                         ((0.1,), "(0.1,)"), (True, "True"), (float("nan"), "nan")])
def test_check_lam_range_names_the_bad_value_and_the_rule(lam, needle):
    with pytest.raises(BadArgumentError, match=r"\[0, 1\]|low <= high") as err:
        check_lam_range(lam)
    assert needle in str(err.value)
