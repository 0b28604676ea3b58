"""Fractal generator determinism, the library (folders with bad files, fit + cache) and the shipped set."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.errors import BadArgumentError, BadImageError
from diffusemix_core.engine.fractals import (DEFAULT_FRACTAL_DIR, FRACTAL_KINDS, FractalLibrary, fit_to,
                                      generate_fractal, main)

SIZE = 64


@pytest.mark.parametrize("kind", FRACTAL_KINDS)
def test_generator_is_deterministic_per_seed(kind):
    a = generate_fractal(11, SIZE, kind)
    b = generate_fractal(11, SIZE, kind)
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    c = generate_fractal(12, SIZE, kind)
    assert np.abs(a.astype(int) - c).mean() > 5  # another seed, another picture


@pytest.mark.parametrize("seed", [0, 3, 8])
@pytest.mark.parametrize("kind", FRACTAL_KINDS)
def test_generator_draws_bright_structure_on_black(kind, seed):
    img = generate_fractal(seed, 96, kind)
    value = img.max(axis=2)  # HSV value: bright in any hue
    assert (value < 20).mean() > 0.15  # a dark background
    assert np.percentile(value[value >= 20], 90) > 100  # bright structure
    assert (img.max(axis=2).astype(int) - img.min(axis=2)).max() > 60  # coloured, not gray
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 100  # not a flat shape


def test_kind_none_is_chosen_by_the_seed():
    kinds_seen = set()
    for seed in range(12):
        img = generate_fractal(seed, 32)
        np.testing.assert_array_equal(img, generate_fractal(seed, 32))
        kinds_seen.add(next(k for k in FRACTAL_KINDS if np.array_equal(img, generate_fractal(seed, 32, k))))
    assert len(kinds_seen) >= 2


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"seed": 1.5}, {"seed": 0, "size": 4}, {"seed": 0, "kind": "x"}])
def test_generator_bad_arguments(kwargs):
    with pytest.raises(BadArgumentError):
        generate_fractal(**kwargs)


def test_procedural_library():
    lib = FractalLibrary.procedural(5, seed=2, size=SIZE)
    assert len(lib) == 5
    assert lib.ids == sorted(lib.ids) and lib.ids[0] == "ifs_000.png" and "julia_001.png" in lib.ids
    again = FractalLibrary.procedural(5, seed=2, size=SIZE)
    other = FractalLibrary.procedural(5, seed=3, size=SIZE)
    for fid in lib.ids:
        img = lib.get(fid)
        assert img.shape == (SIZE, SIZE, 3) and not img.flags.writeable
        np.testing.assert_array_equal(img, again.get(fid))
    assert any(not np.array_equal(lib.get(f), other.get(f)) for f in lib.ids)
    # fractal i does not depend on how many are generated
    np.testing.assert_array_equal(FractalLibrary.procedural(2, seed=2, size=SIZE).get("ifs_000.png"),
                                  lib.get("ifs_000.png"))


def write_png(path: Path, seed: int, shape=(40, 60, 3)) -> np.ndarray:
    array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(array).save(path)
    return array


def test_from_folder_skips_bad_files_with_a_warning(tmp_path, caplog):
    good_a = write_png(tmp_path / "a.png", 1)
    (tmp_path / "sub").mkdir()
    good_b = write_png(tmp_path / "sub" / "b.png", 2)
    (tmp_path / "fake.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("ignored: not an image extension")
    with caplog.at_level(logging.WARNING, logger="diffusemix_core.engine.fractals"):
        lib = FractalLibrary.from_folder(tmp_path)
    assert lib.ids == ["a.png", "sub/b.png"]
    assert lib.origin == str(tmp_path)
    np.testing.assert_array_equal(lib.get("a.png"), good_a)
    np.testing.assert_array_equal(lib.get("sub/b.png"), good_b)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "fake.png" in warned and "empty.jpg" in warned and "readme" not in warned


def test_from_folder_corrupt_pixels_raise_on_use(tmp_path):
    write_png(tmp_path / "good.png", 1)
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # the header is fine, the pixels are not
    lib = FractalLibrary.from_folder(tmp_path)
    with pytest.raises(BadImageError, match="cut.png"):
        lib.fit("cut.png", 10, 10)
    assert lib.fit("good.png", 10, 10).shape == (10, 10, 3)


def test_from_folder_errors(tmp_path):
    with pytest.raises(BadArgumentError):
        FractalLibrary.from_folder(tmp_path / "missing")
    (tmp_path / "x.png").write_text("nope")
    with pytest.raises(BadArgumentError, match="no readable images"):
        FractalLibrary.from_folder(tmp_path)


@pytest.mark.parametrize("h,w", [(40, 60), (80, 120), (100, 30), (17, 256), (8, 8)])
def test_fit_shape_content_and_cache(h, w, tmp_path):
    source = write_png(tmp_path / "f.png", 5)  # 40 × 60
    lib = FractalLibrary.from_folder(tmp_path)
    fitted = lib.fit("f.png", h, w)
    assert fitted.shape == (h, w, 3) and fitted.dtype == np.uint8 and not fitted.flags.writeable
    assert lib.fit("f.png", h, w) is fitted  # cached per size
    if (h, w) == (40, 60):
        np.testing.assert_array_equal(fitted, source)
    if (h, w) == (80, 120):  # same aspect: a plain bicubic resize, like the authors' PIL resize
        expected = np.asarray(Image.fromarray(source).resize((120, 80), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(fitted, expected)


def test_fit_centre_crops_keeping_aspect():
    stripes = np.zeros((50, 50, 3), np.uint8)
    stripes[:, 20:30] = 255  # a vertical white band in the middle
    lib = FractalLibrary({"s.png": stripes})
    wide = lib.fit("s.png", 20, 50)  # cropped top and bottom, band stays put
    np.testing.assert_array_equal(wide[:, 22:28], 255)
    assert (wide[:, :18] == 0).all() and (wide[:, 32:] == 0).all()


def test_fit_to_any_image():
    rng = np.random.default_rng(8)
    img = rng.integers(0, 256, (30, 90, 3), dtype=np.uint8)
    out = fit_to(img, 30, 30)  # same height: a centre crop, no resampling
    np.testing.assert_array_equal(out, img[:, 30:60])
    assert out.flags.writeable and not np.shares_memory(out, img)
    assert fit_to(img[..., 0], 12, 7).shape == (12, 7, 3)  # gray input goes through load_image
    np.testing.assert_array_equal(fit_to(img, 30, 90), img)
    with pytest.raises(BadArgumentError):
        fit_to(img, 0, 5)


def test_fit_cache_is_bounded():
    lib = FractalLibrary.procedural(2, seed=0, size=32)
    lib.max_cache_bytes = 3 * 64 * 64 * 3
    first = lib.fit(lib.ids[0], 64, 64)
    for size in (65, 66, 67):
        lib.fit(lib.ids[0], size, size)
    assert lib.fit(lib.ids[0], 64, 64) is not first  # evicted, recomputed ...
    np.testing.assert_array_equal(lib.fit(lib.ids[0], 64, 64), first)  # ... to the same pixels


def test_unknown_id_and_bad_size():
    lib = FractalLibrary.procedural(1, size=32)
    with pytest.raises(BadArgumentError, match="unknown fractal"):
        lib.get("nope.png")
    with pytest.raises(BadArgumentError):
        lib.fit(lib.ids[0], 0, 10)
    with pytest.raises(BadArgumentError):
        FractalLibrary({})


def test_array_sources_are_copied_read_only():
    src = np.full((4, 4, 3), 9, np.uint8)
    lib = FractalLibrary({"x": src, "g": np.full((4, 4), 7, np.uint8)})
    src[:] = 0
    assert (lib.get("x") == 9).all() and not lib.get("x").flags.writeable
    assert lib.get("g").shape == (4, 4, 3)


def test_shipped_set_loads_and_is_small():
    files = sorted(p for p in DEFAULT_FRACTAL_DIR.iterdir() if p.suffix == ".png")
    assert 24 <= len(files) <= 64
    assert sum(p.stat().st_size for p in files) < 5 * 2**20
    lib = FractalLibrary.default()
    assert lib.origin == str(DEFAULT_FRACTAL_DIR) and len(lib) == len(files)
    kinds = {fid.split("_")[0] for fid in lib.ids}
    assert kinds == set(FRACTAL_KINDS)
    for fid in lib.ids:
        assert lib.get(fid).shape == (256, 256, 3)
    assert (DEFAULT_FRACTAL_DIR / "README.md").is_file()


def test_shipped_set_is_what_the_command_generates():
    generated = FractalLibrary.procedural(4, seed=0, size=256)  # the first 4 of the documented command
    shipped = FractalLibrary.default()
    for fid in generated.ids:
        np.testing.assert_array_equal(generated.get(fid), shipped.get(fid))


def test_cli_writes_the_set(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "out"), "--count", "3", "--seed", "5", "--size", "48"]) == 0
    lib = FractalLibrary.from_folder(tmp_path / "out")
    expected = FractalLibrary.procedural(3, seed=5, size=48)
    assert lib.ids == expected.ids
    for fid in lib.ids:
        np.testing.assert_array_equal(lib.get(fid), expected.get(fid))
    assert "wrote 3 fractals" in capsys.readouterr().out
