"""The content-addressed image store of a workspace: ``W/images/ab/<sha256>.png``, every image once.

An image's name is the sha256 of its shape and decoded pixels (:func:`images.image_key`), so storing the same
image twice writes one file, and a name always means the same pixels. Files are written atomically (temp file,
fsync, ``os.replace``: see ``files.py``), so a name in the store always holds a complete file. The store itself
knows nothing of the manifest: which files are referenced, and which were journalled by a writer that died, is the
manifest's business (``workspace.Workspace.gc`` and ``check`` join the two).

What is stored is what cannot be recomputed: the sources I (decoded, orientation-corrected), the generated Î, and
the fractal library images F are taken from. The fitted fractal and the final image A are pure functions of those
and of the recorded choices (``engine.Mixer.mix``), composed when shown or exported.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import WorkspaceError
from ..engine.images import encode_png, image_key, load_image
from .files import TMP_PREFIX, atomic_write, remove_dead_temp_files

__all__ = ["IMAGES_DIR", "PNG_COMPRESS_LEVEL", "ImageStore"]

IMAGES_DIR = "images"
# Measured on 512² photo-like images (bench/pipeline.py prints it): level 1 encodes in ~25 ms and keeps 70% of the
# raw size, level 6 takes ~37 ms for 64%, level 0 ~13 ms for 100%. Level 1 is the store's trade-off.
PNG_COMPRESS_LEVEL = 1
_RELPATH = re.compile(rf"^{IMAGES_DIR}/([0-9a-f]{{2}})/([0-9a-f]{{64}})\.png$")


class ImageStore:
    """The images of one workspace folder; paths handed out and taken in are relative to that folder."""

    def __init__(self, root: str | Path, *, durable: bool = True) -> None:
        self.root = Path(root)
        self.path = self.root / IMAGES_DIR
        self.durable = durable  # fsync every file before it is renamed into place
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # names ------------------------------------------------------------------------------------------------
    @staticmethod
    def relpath(key: str) -> str:
        """Where the image with content key `key` lives, relative to the workspace."""
        return f"{IMAGES_DIR}/{key[:2]}/{key}.png"

    @staticmethod
    def is_relpath(relpath: str) -> bool:
        """Whether `relpath` is a well-formed store name (``images/ab/<64 hex>.png`` with a matching prefix)."""
        match = _RELPATH.match(relpath or "")
        return bool(match) and match.group(2).startswith(match.group(1))

    def abspath(self, relpath: str) -> Path:
        """The file of a store name; refuses anything that is not one (no other file is reachable through here)."""
        if not self.is_relpath(relpath):
            raise WorkspaceError(f"{relpath!r} is not an image of the store; the manifest may be damaged (run `check`).")
        return self.root / relpath

    # writing ----------------------------------------------------------------------------------------------
    @staticmethod
    def encode(image: np.ndarray) -> tuple[str, bytes]:
        """(store name, PNG bytes) of an image: the CPU part of storing it, safe to run in any thread."""
        return ImageStore.relpath(image_key(image)), encode_png(image, compress_level=PNG_COMPRESS_LEVEL)

    def put(self, image: np.ndarray) -> str:
        """Store `image` (once: the name is its content hash) and return its name."""
        relpath, data = self.encode(image)
        self.put_encoded(relpath, data)
        return relpath

    def put_encoded(self, relpath: str, data: bytes) -> None:
        """Write encoded bytes under their store name, unless a file is there already."""
        target = self.abspath(relpath)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data, durable=self.durable)

    def put_many(self, files: Sequence[tuple[str, bytes]]) -> None:
        """Write many encoded files; writes and fsyncs release the GIL, so a few threads overlap them."""
        if len(files) <= 1:
            for relpath, data in files:
                self.put_encoded(relpath, data)
            return
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="store-writer")
        list(self._pool.map(lambda item: self.put_encoded(*item), files))

    # reading ----------------------------------------------------------------------------------------------
    def read(self, relpath: str) -> np.ndarray:
        """Decode a stored image (uint8 RGB)."""
        return load_image(self.abspath(relpath))

    def read_bytes(self, relpath: str) -> bytes:
        return self.abspath(relpath).read_bytes()

    def iter_files(self, *, temp: bool = False) -> Iterator[Path]:
        """Every file in the store's sub-folders (temp files only when `temp`, else only finished files)."""
        if not self.path.is_dir():
            return
        for sub in os.scandir(self.path):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(sub.path):
                if entry.name.startswith(TMP_PREFIX) == temp and entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)

    def holds_images(self) -> bool:
        """Whether at least one finished image file is in the store."""
        return next(self.iter_files(), None) is not None

    def remove_dead_temp_files(self) -> int:
        """Delete temp files left by writers that are no longer running."""
        return remove_dead_temp_files(self.iter_files(temp=True))
