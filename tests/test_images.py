"""load_image on what real datasets contain: every mode, EXIF orientation, animations, broken files, bombs."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.errors import BadArgumentError, BadImageError
from diffusemix_core.engine.images import IMAGE_EXTENSIONS, is_image_path, load_image, save_png, to_pil

H, W = 24, 32


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def composite_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha over white, in float64, rounded (the reference for the integer implementation)."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(rgb.astype(np.float64) * a + 255.0 * (1.0 - a)).astype(np.uint8)


def gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def make_case(mode: str, base: np.ndarray) -> tuple[Image.Image, np.ndarray, str]:
    """(image in `mode`, expected RGB, file format that can store it)."""
    rgb = Image.fromarray(base)
    alpha = np.random.default_rng(1).integers(0, 256, (H, W), dtype=np.uint8)
    if mode == "L":
        img = rgb.convert("L")
        return img, gray3(np.asarray(img)), "PNG"
    if mode == "LA":
        gray = np.asarray(rgb.convert("L"))
        img = Image.fromarray(np.dstack([gray, alpha]))
        return img, composite_white(gray3(gray), alpha), "PNG"
    if mode == "RGBA":
        img = Image.fromarray(np.dstack([base, alpha]))
        return img, composite_white(base, alpha), "PNG"
    if mode == "P":
        img = rgb.quantize(16)
        return img, np.asarray(img.convert("RGB")), "PNG"
    if mode == "P+transparency":
        img = rgb.quantize(16)
        index = np.asarray(img)
        img.info["transparency"] = int(index[0, 0])
        expected = np.asarray(img.convert("RGB")).copy()
        expected[index == index[0, 0]] = 255
        return img, expected, "PNG"
    if mode == "CMYK":
        img = rgb.convert("CMYK")
        return img, np.asarray(img.convert("RGB")), "TIFF"
    if mode == "I;16":
        values = (base[..., 0].astype(np.uint16) * 257 + 100).clip(0, 65535).astype(np.uint16)
        img = Image.fromarray(values)
        assert img.mode == "I;16"
        return img, gray3(np.rint(values / 257.0).astype(np.uint8)), "PNG"
    if mode == "I":
        values = base[..., 1].astype(np.int32) * 200  # 16-bit range
        img = Image.fromarray(values)
        return img, gray3(np.rint(values / 257.0).astype(np.uint8)), "TIFF"
    if mode == "I-8bit":
        values = base[..., 1].astype(np.int32)
        return Image.fromarray(values), gray3(base[..., 1]), "TIFF"
    if mode == "F":
        values = base[..., 2].astype(np.float32) / 255.0  # [0, 1] floats
        return Image.fromarray(values), gray3(np.rint(values.astype(np.float64) * 255).astype(np.uint8)), "TIFF"
    if mode == "RGB":
        return rgb, base, "PNG"
    raise AssertionError(mode)


MODES = ["RGB", "L", "LA", "P", "P+transparency", "RGBA", "CMYK", "I;16", "I", "I-8bit", "F"]


def check_rgb(result: np.ndarray, expected: np.ndarray) -> None:
    assert result.dtype == np.uint8 and result.shape == expected.shape and result.flags.c_contiguous
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("mode", MODES)
def test_modes_from_pil(mode, base):
    img, expected, _ = make_case(mode, base)
    check_rgb(load_image(img), expected)


@pytest.mark.parametrize("mode", MODES)
def test_modes_from_file(mode, base, tmp_path):
    img, expected, fmt = make_case(mode, base)
    path = tmp_path / f"image.{fmt.lower()}"
    img.save(path, format=fmt)
    with Image.open(path) as reopened:  # the file really stores the mode we mean to test
        assert reopened.mode == img.mode or (mode == "I" and reopened.mode.startswith("I"))
    check_rgb(load_image(path), expected)
    check_rgb(load_image(str(path)), expected)
    check_rgb(load_image(path.read_bytes()), expected)


def quadrant_image() -> np.ndarray:
    """48×64 image with four flat, well-separated colours (robust to JPEG)."""
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    img[:24, :32] = (230, 30, 30)
    img[:24, 32:] = (30, 230, 30)
    img[24:, :32] = (30, 30, 230)
    img[24:, 32:] = (230, 230, 30)
    return img


@pytest.mark.parametrize("orientation,rotate", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_applied(orientation, rotate, tmp_path):
    stored = quadrant_image()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo_{orientation}.jpg"
    Image.fromarray(stored).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    with Image.open(path) as check:
        assert check.getexif().get(0x0112) == orientation
    upright = np.rot90(stored, rotate)  # 3: 180°, 6: 90° clockwise, 8: 90° counter-clockwise
    result = load_image(path)
    assert result.shape == upright.shape
    assert np.abs(result.astype(int) - upright).mean() < 6


def test_animated_gif_gives_first_frame(tmp_path):
    colours = [(200, 20, 20), (20, 200, 20), (20, 20, 200)]
    frames = [Image.new("RGB", (20, 10), c) for c in colours]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    result = load_image(path)
    assert result.shape == (10, 20, 3)
    assert np.abs(result.astype(int) - colours[0]).max() <= 4


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width × height RGB pixels, followed by a tiny IDAT and IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("truncated.png", lambda a: png_bytes(a)[: len(png_bytes(a)) // 2], "truncated"),
        ("truncated.jpg", lambda a: jpeg_bytes(a)[: len(jpeg_bytes(a)) // 2], "truncated"),
        ("header_only.jpg", lambda a: jpeg_bytes(a)[:20], ""),
        ("empty.png", lambda a: b"", "empty"),
        ("notes.png", lambda a: b"this is a text file, not a picture\n" * 20, "not a recognised image"),
        ("bomb.png", lambda a: bomb_png(100_000, 100_000), "bomb"),
    ],
)
def test_bad_files_raise_bad_image_error_naming_the_file(name, content, reason, base, tmp_path):
    path = tmp_path / name
    path.write_bytes(content(base))
    with pytest.raises(BadImageError) as info:
        load_image(path)
    err = info.value
    assert err.path == str(path)
    assert str(path) in str(err)
    assert reason in err.reason
    assert err.reason in str(err)


def test_bomb_is_refused_fast_from_the_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(100_000, 100_000))  # 10^10 pixels = 30 GB if decoded
    start = time.perf_counter()
    with pytest.raises(BadImageError):
        load_image(path)
    assert time.perf_counter() - start < 2  # decoding it would take minutes and 30 GB; the header check is instant


def test_max_pixels_is_checked_before_decoding(tmp_path):
    path = tmp_path / "claims_big.png"
    path.write_bytes(bomb_png(5000, 4000))  # under Pillow's own limit, over ours; pixel data is bogus
    with pytest.raises(BadImageError, match="5000x4000") as info:
        load_image(path, max_pixels=1_000_000)
    assert "decompression bomb" in info.value.reason
    ok = tmp_path / "ok.png"
    ok.write_bytes(png_bytes(np.zeros((10, 10, 3), np.uint8)))
    assert load_image(ok, max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(BadImageError):
        load_image(ok, max_pixels=99)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(BadImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(BadImageError, match="folder"):
        load_image(tmp_path)


def test_in_memory_errors_have_no_path():
    with pytest.raises(BadImageError) as info:
        load_image(b"")
    assert info.value.path is None
    with pytest.raises(BadImageError):
        load_image(b"GIF89a broken")
    with pytest.raises(BadImageError):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(BadImageError):
        load_image(np.zeros((4, 4, 3), np.int64))
    with pytest.raises(BadImageError):
        load_image(12345)  # type: ignore[arg-type]


def test_array_sources(base):
    check_rgb(load_image(base), base)
    assert not np.shares_memory(load_image(base), base)
    check_rgb(load_image(base[:, ::2]), np.ascontiguousarray(base[:, ::2]))  # non-contiguous view
    check_rgb(load_image(base[..., 0]), gray3(base[..., 0]))
    check_rgb(load_image(base[..., :1]), gray3(base[..., 0]))
    alpha = base[..., 0]
    check_rgb(load_image(np.dstack([base, alpha])), composite_white(base, alpha))
    mask = base[..., 0] > 128
    check_rgb(load_image(mask), gray3(np.where(mask, 255, 0).astype(np.uint8)))
    check_rgb(load_image(base.astype(np.uint16) * 257), base)
    check_rgb(load_image(base.astype(np.float32) / 255.0), base)


def test_save_png_and_to_pil_round_trip(base, tmp_path):
    path = tmp_path / "out.png"
    save_png(base, path)
    check_rgb(load_image(path), base)
    gray = base[..., 0]
    assert to_pil(gray).mode == "L" and to_pil(base).mode == "RGB"
    assert np.array_equal(np.asarray(to_pil(gray > 100)), np.where(gray > 100, 255, 0))
    with pytest.raises(BadArgumentError):
        to_pil(base.astype(np.float32))
    with pytest.raises(BadArgumentError):
        to_pil(np.zeros((4, 4, 4), np.uint8))


def test_image_extensions():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"} == set(IMAGE_EXTENSIONS)
    assert is_image_path("a/B.JPG") and is_image_path(Path("x.webp"))
    assert not is_image_path("notes.txt") and not is_image_path("folder")
