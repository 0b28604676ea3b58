"""Decode real-world image files safely into RGB uint8 arrays.

``load_image`` is the one door through which images enter the engine. It survives what real datasets contain:

* EXIF orientation is applied (phone photos come out upright);
* every mode becomes RGB: L/1/CMYK/YCbCr/... by Pillow's conversion; I;16 (16-bit) scaled by 1/257;
  I (32-bit int) taken as 8-bit if all values are in [0, 255], else clipped to 16 bits and scaled by 1/257;
  F (float) taken as [0, 1] if its maximum is <= 1, else clipped to [0, 255];
  anything with alpha (LA, PA, RGBA, P or L with a transparency key, ...) is composited on white;
* animated files (GIF, APNG, WebP, multi-page TIFF) give their first frame;
* missing, empty, non-image, truncated and corrupt files and decompression bombs raise
  :class:`~diffusemix_core.errors.BadImageError` naming the file and the cause. The pixel count is checked from
  the header BEFORE any pixel is decoded, so a bomb costs a few bytes of reading.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BadArgumentError, BadImageError

__all__ = ["IMAGE_EXTENSIONS", "DEFAULT_MAX_PIXELS", "ImageSource", "load_image", "save_png", "to_pil",
           "is_image_path", "image_key", "encode_png", "IGNORED_DIRS", "MAX_ASPECT", "check_image_shape"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
IGNORED_DIRS: frozenset[str] = frozenset({"__MACOSX"})  # folders of metadata, never class folders (nor are hidden ones)
DEFAULT_MAX_PIXELS = 64_000_000
MAX_ASPECT = 20  # long side / short side: beyond it an image is a strip, not a photo (and would blow up resizes)

ImageSource = Union[str, Path, bytes, Image.Image, np.ndarray]

_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def is_image_path(path: str | Path) -> bool:
    """True if the file name has one of IMAGE_EXTENSIONS (case-insensitive); the content is not checked."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return ``source`` as a new C-contiguous uint8 (h, w, 3) RGB array.

    ``source`` is a path, the bytes of a file, a PIL image or an array ((h, w), (h, w, 1|3|4); uint8, bool,
    uint16 or float). Raises BadImageError(path, reason) for anything that cannot be decoded.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        path = getattr(source, "filename", None) or None
        return _decode(source, path, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise BadImageError(None, "the data is empty (0 bytes)")
        return _open_and_decode(io.BytesIO(bytes(source)), None, max_pixels)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise BadImageError(path, "no such file")
        if path.is_dir():
            raise BadImageError(path, "it is a folder, not an image file")
        if path.stat().st_size == 0:
            raise BadImageError(path, "the file is empty (0 bytes)")
        with open(path, "rb") as handle:
            return _open_and_decode(handle, path, max_pixels)
    raise BadImageError(None, f"unsupported source type {type(source).__name__} (use a path, bytes, PIL image "
                              "or array)")


def _open_and_decode(handle: io.IOBase, path: Path | None, max_pixels: int) -> np.ndarray:
    try:
        image = Image.open(handle)
    except Image.DecompressionBombError as exc:
        raise BadImageError(path, f"decompression bomb refused by Pillow ({exc})") from exc
    except UnidentifiedImageError as exc:
        suffix = f" (is it really a {path.suffix} file?)" if path is not None and path.suffix else ""
        raise BadImageError(path, f"not a recognised image format{suffix}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImageError(path, f"truncated or corrupt header ({exc})") from exc
    with image:
        return _decode(image, path, max_pixels)


def check_image_shape(width: int, height: int, path: str | Path | None = None) -> None:
    """Raise BadImageError unless (width, height) has pixels and an aspect ratio within 1:MAX_ASPECT."""
    if width <= 0 or height <= 0:
        raise BadImageError(path, f"the image has no pixels ({width}x{height})")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise BadImageError(path, f"the image is {width}x{height}, an aspect ratio beyond 1:{MAX_ASPECT}; crop it "
                                  "to a less extreme shape first")


def _decode(image: Image.Image, path: str | Path | None, max_pixels: int) -> np.ndarray:
    """Check the header size and shape, decode frame 0, apply EXIF orientation, convert to RGB uint8."""
    width, height = image.size
    check_image_shape(width, height, path)
    if width * height > max_pixels:
        raise BadImageError(
            path,
            f"the header claims {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(possible decompression bomb; pass a larger max_pixels if the file is genuine)",
        )
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise BadImageError(path, f"decompression bomb refused by Pillow ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise BadImageError(path, f"truncated or corrupt image data ({exc})") from exc
    image = _apply_exif_orientation(image, path)
    try:
        return _image_to_rgb(image)
    except (OSError, ValueError) as exc:
        raise BadImageError(path, f"cannot convert mode {image.mode} to RGB ({exc})") from exc


def _apply_exif_orientation(image: Image.Image, path: str | Path | None) -> Image.Image:
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF must not make a readable image unreadable
        log.warning("ignoring unreadable EXIF data in %s", path or "image")
        return image
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image


def _image_to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return np.array(image, dtype=np.uint8, order="C")
    if mode in _SIXTEEN_BIT_MODES:
        return _gray_to_rgb(_scale_16bit(np.asarray(image).astype(np.float64)))
    if mode == "I":
        values = np.asarray(image).astype(np.float64)
        if values.size and (values.min() < 0 or values.max() > 255):
            values = _scale_16bit(np.clip(values, 0, 65535))
        return _gray_to_rgb(values)
    if mode == "F":
        return _gray_to_rgb(_scale_float(np.asarray(image, dtype=np.float64)))
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return _composite_on_white(np.asarray(image.convert("RGBA")))
    return np.array(image.convert("RGB"), dtype=np.uint8, order="C")


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    return values / 257.0


def _scale_float(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
    if values.size and values.max() <= 1.0:
        values = values * 255.0
    return values


def _gray_to_rgb(values: np.ndarray) -> np.ndarray:
    """(h, w) numbers on a 0..255 scale -> rounded, clipped uint8 (h, w, 3)."""
    gray = np.rint(np.clip(values, 0, 255)).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (h, w, 4) -> (h, w, 3) composited on white, rounded to nearest (exact integer arithmetic)."""
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return np.ascontiguousarray(out.astype(np.uint8))


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    """Arrays: (h, w) / (h, w, 1) gray, (h, w, 3) RGB, (h, w, 4) RGBA; uint8, bool, uint16 or float."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise BadImageError(None, f"array of shape {array.shape} is not an image (use (h, w), (h, w, 3) or "
                                  "(h, w, 4))")
    check_image_shape(array.shape[1], array.shape[0])
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * np.uint8(255)
    elif array.dtype == np.uint16:
        array = np.rint(_scale_16bit(array.astype(np.float64))).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = np.rint(np.clip(_scale_float(array.astype(np.float64)), 0, 255)).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise BadImageError(None, f"array dtype {array.dtype} is not supported (use uint8, uint16, bool or "
                                  "float)")
    if array.ndim == 2:
        return np.ascontiguousarray(np.repeat(array[..., None], 3, axis=-1))
    if array.shape[-1] == 4:
        return _composite_on_white(array)
    return np.array(array, dtype=np.uint8, order="C", copy=True)


def to_pil(array: np.ndarray) -> Image.Image:
    """uint8 (h, w, 3) -> RGB image; uint8 or bool (h, w) -> L image (bool as 0/255)."""
    array = np.asarray(array)
    if array.ndim == 2 and array.dtype == np.bool_:
        array = array.astype(np.uint8) * np.uint8(255)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise BadArgumentError(
            f"to_pil needs uint8 (h, w, 3) or (h, w), got {array.dtype} {array.shape}; use load_image() first."
        )
    return Image.fromarray(np.ascontiguousarray(array))


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Write a uint8 (h, w, 3) or (h, w) array to ``path`` as PNG (plain write, not atomic)."""
    to_pil(array).save(Path(path), format="PNG")


def encode_png(array: np.ndarray, *, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 (h, w, 3) or (h, w) array (lossless; zlib level 1 is ~1.5x faster than the default 6)."""
    buf = io.BytesIO()
    to_pil(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def image_key(image: np.ndarray) -> str:
    """Content hash of a decoded image (sha256 of its shape and pixels): names it in the store and the caches."""
    digest = hashlib.sha256(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()
