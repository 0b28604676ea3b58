"""Small previews of A for galleries: made by the bulk run, or on first view, kept in ``W/cache/thumbs``.

A is composed from I, Î and the fractal when needed (``store.py``), which costs ~10 ms at 512²; a gallery page of
48 would cost half a second. So the compose stage also writes a preview (long side :data:`THUMB_SIDE` px), and a
preview that is missing (an older workspace, a deleted cache, an app save) is made on first view. Previews are
derived data: named by the inputs that determine A (I, Î, fractal, mask, λ, feather), written atomically, never
journalled, never referenced by the manifest; deleting ``W/cache`` loses nothing.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from .files import atomic_write

__all__ = ["CACHE_DIR", "THUMB_SIDE", "Thumbnails", "thumbnail_key", "thumbnail_png"]

CACHE_DIR = "cache"
THUMB_SIDE = 192


def thumbnail_key(source_path: str, generation_path: str, fractal_path: str, mask: str, lam: float,
                  feather: int) -> str:
    """The name of A's preview: a hash of everything that determines A (the store paths are content hashes)."""
    text = f"{source_path}|{generation_path}|{fractal_path}|{mask}|{float(lam)!r}|{int(feather)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def row_key(row: dict) -> str:
    """:func:`thumbnail_key` of a manifest row (``Manifest.list_augmentations`` / ``get_augmentation``)."""
    return thumbnail_key(row["source_image_path"], row["generation_path"], row["fractal_path"] or row["path"] or "",
                         row["mask"], row["lam"], row["feather"])


def thumbnail_png(final: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    """PNG bytes of A scaled so its long side is `side` (never enlarged)."""
    image = Image.fromarray(np.ascontiguousarray(final))
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class Thumbnails:
    """The preview cache of one workspace folder."""

    def __init__(self, workspace_path: str | Path) -> None:
        self.root = Path(workspace_path) / CACHE_DIR / "thumbs"

    def path_of(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.png"

    def put(self, key: str, data: bytes) -> Path:
        target = self.path_of(key)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, data, durable=False)
        return target

    def for_row(self, workspace, row: dict) -> Path:
        """The preview of a row's A, made (and kept) now if it is missing."""
        key = row_key(row)
        target = self.path_of(key)
        if target.exists():
            return target
        return self.put(key, thumbnail_png(workspace.final_image(row)))
