"""What the app holds and serves for people: bounded in pixels, memory and disk, whatever they upload.

* :func:`load_interactive` decodes an upload only if its header says it is within the pixel limit for interactive
  use (default 16 MP): a 7900×7900 PNG of 200 KB is refused in milliseconds, with what to do instead;
* :class:`ResultCache` keeps recent results by id for re-mixing, bounded in bytes, not in count;
* :class:`StageFiles` writes the stage images the browser shows, capped at a display size (full size on request),
  each content once, under a byte budget (oldest files go first).

Nothing here imports Gradio: the Explore session (:mod:`.explore`) uses these, the tabs show the files.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cachetools import LRUCache
from PIL import Image

from ..errors import BadImageError
from ..engine.images import load_image
from ..workspace.files import atomic_write

if TYPE_CHECKING:
    from ..engine.diffusemix import AugmentationRecord

__all__ = ["DEFAULT_INTERACTIVE_PIXELS", "ResultCache", "StageFiles", "display_size", "load_interactive"]

DEFAULT_INTERACTIVE_PIXELS = 16_000_000
DEFAULT_DISPLAY_SIDE = 1024


def load_interactive(source: Any, *, max_pixels: int = DEFAULT_INTERACTIVE_PIXELS) -> np.ndarray:
    """Decode an image for interactive use, refusing one over `max_pixels` before any pixel is decoded.

    Errors name the file by its base name only (no server paths in answers).
    """
    name = Path(source).name if isinstance(source, (str, Path)) else None
    if isinstance(source, (str, Path)):
        try:
            with Image.open(source) as probe:
                width, height = probe.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            width = height = 0  # load_image below says what is wrong with it
        if width * height > max_pixels:
            raise BadImageError(
                name, f"it is {width}x{height} = {width * height / 1e6:.1f} MP, over the {max_pixels / 1e6:.0f} MP "
                "limit for interactive use (downscale it, start the app with a larger --max-pixels, or augment it "
                "with `python -m diffusemix_core augment`)")
    try:
        return load_image(source, max_pixels=max_pixels)
    except BadImageError as exc:
        raise BadImageError(name, exc.reason) from None


def display_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) scaled down so the long side is at most `max_side` (unchanged when it already is)."""
    scale = max_side / max(height, width)
    if scale >= 1:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def _record_bytes(record: AugmentationRecord) -> int:
    return sum(a.nbytes for a in (record.original, record.generated, record.mask, record.hybrid, record.fractal,
                                  record.final))


class ResultCache:
    """Recent results by id ("r-…"), so re-mixing works from an id: a thread-safe LRU bounded in bytes
    (``cachetools``). A result larger than the whole budget is not kept (its id then answers "expired")."""

    def __init__(self, max_bytes: int = 512 * 1024**2) -> None:
        self.max_bytes = int(max_bytes)
        self._items: LRUCache[str, AugmentationRecord] = LRUCache(maxsize=self.max_bytes, getsizeof=_record_bytes)
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return int(self._items.currsize)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, record: AugmentationRecord) -> str:
        result_id = "r-" + uuid.uuid4().hex[:12]
        with self._lock:
            if _record_bytes(record) <= self.max_bytes:
                self._items[result_id] = record  # the least recently used go first
        return result_id

    def get(self, result_id: str) -> AugmentationRecord | None:
        with self._lock:
            return self._items.get(result_id)  # a hit becomes the most recently used


class StageFiles:
    """PNG files of displayed images, one per content key, capped at `max_side` px, under `max_bytes` on disk.

    Re-mixing changes only H and A (and M, F when their choice changes), so I, Î, M and F are served from the files
    written before and only what changed is encoded. When the folder grows past `max_bytes`, the least recently
    written files are deleted (a browser that still shows one gets it re-made on its next request).
    """

    def __init__(self, root: Path, *, compress_level: int = 1, max_side: int = DEFAULT_DISPLAY_SIDE,
                 max_bytes: int = 1024**3) -> None:
        self.root = Path(root)
        self.compress_level, self.max_side, self.max_bytes = compress_level, max_side, max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="png")  # zlib releases the GIL
        self._files: OrderedDict[Path, int] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _target(self, key: str, full_size: bool, name: str | None = None) -> Path:
        digest = hashlib.sha1((key + ("|full" if full_size else "")).encode()).hexdigest()[:24]
        return self.root / digest / name if name else self.root / (digest + ".png")

    def path(self, key: str, array: np.ndarray, *, full_size: bool = False, keep: frozenset[Path] = frozenset(),
             name: str | None = None) -> str:
        """The file for `key` (written from `array` if missing), at display size unless `full_size`; with `name`
        (a safe file name) the file is called that, in a folder of its own (a download keeps its name).

        Files of the answer being made (this one and `keep`) are never the ones removed to stay under the budget:
        the browser has yet to fetch them.
        """
        target = self._target(key, full_size, name)
        with self._lock:
            if target in self._files and target.exists():
                self._files.move_to_end(target)
                return str(target)
        image = Image.fromarray(np.ascontiguousarray(array))
        if not full_size:
            h, w = display_size(image.height, image.width, self.max_side)
            if (h, w) != (image.height, image.width):
                image = image.resize((w, h), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=self.compress_level)
        target.parent.mkdir(exist_ok=True)
        atomic_write(target, buffer.getvalue(), durable=False)
        with self._lock:
            self._bytes += buffer.tell() - self._files.pop(target, 0)
            self._files[target] = buffer.tell()
            for old in list(self._files):  # least recently used first
                if self._bytes <= self.max_bytes:
                    break
                if old == target or old in keep:
                    continue
                self._bytes -= self._files.pop(old)
                try:
                    os.unlink(old)
                except FileNotFoundError:
                    pass
        return str(target)

    def paths(self, items: list[tuple[str, np.ndarray]]) -> list[str]:
        """Several files at once (one answer), the missing ones encoded in parallel."""
        keep = frozenset(self._target(key, False) for key, _ in items)
        return list(self._pool.map(lambda item: self.path(*item, keep=keep), items))

    def stage_paths(self, result_id: str, record: AugmentationRecord, names) -> list[str]:
        """The display files of a record's stages `names` (engine.STAGE_NAMES order)."""
        h, w = record.original.shape[:2]
        stages = record.stages()
        keys = {
            "original": f"{result_id}/original",
            "generated": f"{result_id}/generated",
            "mask": f"mask/{record.mask_kind}/{record.feather}/{h}x{w}",
            "hybrid": f"{result_id}/hybrid/{record.mask_kind}",
            "fractal": f"fractal/{record.fractal_id}/{h}x{w}",
            "final": f"{result_id}/final/{record.mask_kind}/{record.fractal_id}/{record.lam!r}",
        }
        return self.paths([(keys[name], stages[name]) for name in names])
