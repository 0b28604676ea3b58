"""Train on it: DiffuseMix as a training-time dataset.

The expensive part of DiffuseMix, Î (the InstructPix2Pix output), is cached in the workspace; everything after it
(mask, fractal, λ) is a cheap pure function. So a training set can re-mix every epoch at mixing cost, the way
PixMix wraps a dataset, while DA-Fusion's "swap a real image for a synthetic one with probability p" decides when:

1. :class:`DiffuseMixDataset` gives one item per source image of a workspace. With probability ``p`` the item is a
   DiffuseMix image re-mixed from one of that source's cached Î with a fresh mask, fractal and λ; otherwise it is
   the original. The draws come from ``numpy.random.default_rng([seed, epoch, index])`` only (sample, then apply:
   :meth:`DiffuseMixDataset.draw` returns plain :class:`Draw` values), so the same seed and epoch give the same
   bytes in any process, with any number of DataLoader workers.
2. :class:`ImageFiles` and :func:`image_folder` read plain class folders (the validation set, exported files).

AugMix's consistency loss, which the paper trains with, is ``losses.py``; the trainer that compares arms with these
(``python -m diffusemix_core train``) is ``trainer.py``.

Images are read lazily, one item at a time; nothing holds a dataset of images in memory. Every SQL statement of
this module is in the "manifest, read-only" section below.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import operator
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..checks import check_int
from ..errors import BadArgumentError, WorkspaceError
from ..engine.fractals import FractalLibrary
from ..engine.images import IGNORED_DIRS, is_image_path, load_image
from ..workspace.manifest import MANIFEST_NAME, STATUSES as REVIEW_STATUSES
from ..engine.masks import MASK_KINDS, check_mask_kind, make_mask
from ..engine.mixing import blend, check_lam_range, hybrid
from ..workspace.files import atomic_write

__all__ = [
    "STATUSES",
    "Draw",
    "DiffuseMixDataset",
    "ImageFiles",
    "image_folder",
    "resize_center_crop",
    "to_tensor",
]

log = logging.getLogger(__name__)

STATUSES: tuple[str, ...] = (*REVIEW_STATUSES, "all")  # which augmentations' Î a dataset re-mixes from


# ------------------------------------------------------------------------------------- the manifest, read-only
# The workspace's tables (docs/workspace.md): sources(id, label, status, origin, image_path),
# generations(id, path), augmentations(source_id, generation_id, status). Paths are relative to the workspace.
def open_manifest(workspace: Path) -> sqlite3.Connection:
    """A read-only connection to ``workspace/manifest.sqlite`` (WorkspaceError if there is none)."""
    db_path = workspace / MANIFEST_NAME
    if not db_path.is_file():
        raise WorkspaceError(
            f"no workspace at '{workspace}' (no {MANIFEST_NAME}); run `augment --workspace {workspace}` first."
        )
    # as_uri() percent-encodes spaces, '?', '#' and non-ASCII names; check_same_thread=False because the
    # dataset serialises its queries with a lock (a thread-pool loader may call it from several threads)
    return sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30, check_same_thread=False)


def _prompt_clause(prompts: Sequence[str] | None) -> tuple[str, list[str]]:
    """The join condition restricting augmentations to `prompts` (None: every prompt)."""
    if prompts is None:
        return "", []
    return f" AND a.prompt IN ({', '.join('?' * len(prompts))})", list(prompts)


def manifest_sources(conn: sqlite3.Connection, status: str, prompts: Sequence[str] | None = None
                     ) -> list[tuple[int, str, int]]:
    """(source id, label, number of distinct Î with an augmentation of `status` and of one of `prompts`) for every
    usable dataset source (`prompts` None: any prompt).

    Usable: ``status = 'ok'`` and ``origin = 'dataset'`` (a bulk run's images; single images saved from the app are
    explorations, not the training set). Ordered by id.
    """
    clause, params = _prompt_clause(prompts)
    return conn.execute(
        f"""SELECT s.id, s.label, COUNT(DISTINCT g.path) FROM sources s
           LEFT JOIN augmentations a ON a.source_id = s.id AND (? = 'all' OR a.status = ?){clause}
           LEFT JOIN generations g ON g.id = a.generation_id
           WHERE s.status = 'ok' AND s.origin = 'dataset' GROUP BY s.id ORDER BY s.id""",
        [status, status, *params],
    ).fetchall()


def manifest_prompt_counts(conn: sqlite3.Connection, status: str) -> dict[str, int]:
    """{prompt: number of distinct Î with an augmentation of `status` on a usable dataset source}."""
    return dict(conn.execute(
        """SELECT a.prompt, COUNT(DISTINCT g.path) FROM augmentations a
           JOIN sources s ON s.id = a.source_id JOIN generations g ON g.id = a.generation_id
           WHERE s.status = 'ok' AND s.origin = 'dataset' AND (? = 'all' OR a.status = ?) GROUP BY a.prompt""",
        [status, status],
    ).fetchall())


def manifest_images(conn: sqlite3.Connection, source_id: int, status: str, prompts: Sequence[str] | None = None
                    ) -> tuple[str, list[str]]:
    """(the source's stored image, the distinct Î of its augmentations of `status` and `prompts`, oldest first)."""
    clause, params = _prompt_clause(prompts)
    rows = conn.execute(
        f"""SELECT s.image_path, g.path FROM sources s
           LEFT JOIN augmentations a ON a.source_id = s.id AND (? = 'all' OR a.status = ?){clause}
           LEFT JOIN generations g ON g.id = a.generation_id
           WHERE s.id = ? ORDER BY g.id""",
        [status, status, *params, int(source_id)],
    ).fetchall()
    if not rows:
        raise WorkspaceError(f"source {source_id} is no longer in the manifest; rebuild the dataset.")
    generated = list(dict.fromkeys(path for _, path in rows if path is not None))
    return rows[0][0], generated


# ------------------------------------------------------------------------------------------- preprocessing
def resize_center_crop(image: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """uint8 (size, size, 3): the shorter side resized to `size` and the centre cropped, in one Pillow call.

    Pillow's bilinear filter widens its support when it shrinks, so downscaling is antialiased.
    """
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    width, height = pil.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    resized = pil.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    return np.asarray(resized)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (h, w, 3) -> float32 tensor (3, h, w) in [0, 1] (what torchvision's ToTensor gives)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def _check_status(status: str) -> str:
    if status not in STATUSES:
        raise BadArgumentError(f"status must be one of {', '.join(STATUSES)}, got {status!r}.")
    return status


# ------------------------------------------------------------------------------------------------ dataset
@dataclass(frozen=True)
class Draw:
    """What one item draws before anything is applied (sample, then apply)."""

    augment: bool  # False: the original image
    generated: int  # index into the source's Î (oldest first); -1 when the source has none
    mask: str  # mask kind: the half of the original that is kept
    fractal: str  # fractal id
    lam: float  # blend factor λ


class DiffuseMixDataset(torch.utils.data.Dataset):
    """One item per source image of a workspace, re-mixed on the fly from the cached Î.

    ``ds[i]`` is ``(image, label_index)``, or ``((clean, aug1, aug2), label_index)`` with ``jsd=True`` (AugMix's
    layout: both augmented views are always DiffuseMix images, whatever ``p``; a source without a cached Î gives its
    original three times). ``image`` is ``transform(PIL image)`` when a transform is given (mixing then runs at the
    source's full resolution, the fractal fitted to it), else a float32 tensor (3, size, size) in [0, 1]: the image
    resized on its shorter side and centre-cropped. For that tensor path, I and Î are read at the training size from a
    cache the first epoch fills (``W/cache/train-<size>/<content hash>.npy``: raw uint8, written atomically, derived
    data that may be deleted), and mixed at that size: the mask splits the same centred crop, and since resizing is
    linear the result is the full-resolution mix resized, up to the pixels at the seam and rounding. An epoch then
    reads two small raw arrays per item instead of decoding two full-size PNGs (``bench/dataset.py``).
    ``cache=False`` mixes at full resolution and resizes once instead (the only way with a feather, or a transform).

    Classes are the sorted source labels (``classes``, ``class_to_idx``; ``targets`` is the label index of every
    item). Call :meth:`set_epoch` before each epoch: the epoch lives in shared memory, so DataLoader workers, also
    persistent ones, see it. Each process opens its own read-only SQLite connection on first use; pickling drops
    it. Sources whose Î have none of the wanted ``status`` (e.g. nothing approved yet) always give the original.
    ``prompts`` (a list of prompt texts, as stored in the augmentations) restricts the Î re-mixed from to those
    prompts' (a per-prompt study); sources with none of them give the original. ``p`` can change between epochs
    (:meth:`set_p`, shared with the workers like the epoch), for a curriculum.
    """

    def __init__(
        self,
        workspace: Any,
        *,
        status: str = "approved",
        p: float = 0.5,
        lam: float | Sequence[float] = 0.2,
        masks: Sequence[str] = MASK_KINDS,
        fractals: FractalLibrary | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        seed: int = 0,
        jsd: bool = False,
        size: int = 224,
        feather: int = 0,
        cache: bool = True,
        prompts: Sequence[str] | None = None,
    ) -> None:
        self.workspace = Path(getattr(workspace, "path", workspace))
        self.status = _check_status(status)
        self._p = torch.zeros((), dtype=torch.float64).share_memory_()  # shared, like the epoch: set_p reaches workers
        self.set_p(p)
        if prompts is not None:
            if isinstance(prompts, str):
                prompts = [prompts]
            prompts = tuple(dict.fromkeys(str(t) for t in prompts))
            if not prompts:
                raise BadArgumentError("prompts must name at least one prompt (None: every prompt); for the "
                                       "originals only, use p=0.")
        self.prompts: tuple[str, ...] | None = prompts
        self.lam_range = check_lam_range(lam)
        self.masks = tuple(check_mask_kind(kind) for kind in masks)
        if not self.masks:
            raise BadArgumentError(f"at least one mask kind is needed; choose from {', '.join(MASK_KINDS)}.")
        self.fractals = fractals if fractals is not None else FractalLibrary.default()
        if transform is not None and not callable(transform):
            raise BadArgumentError(f"transform must be a callable taking a PIL image, got {transform!r}.")
        self.transform = transform
        self.seed = check_int("seed", seed, minimum=0)
        self.jsd = bool(jsd)
        self.size = check_int("size", size, minimum=1)
        self.feather = check_int("feather", feather, minimum=0)
        self.cache = bool(cache) and transform is None and self.feather == 0
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid: int | None = None
        self._lock = threading.Lock()

        conn = open_manifest(self.workspace)
        try:
            rows = manifest_sources(conn, self.status, self.prompts)
        finally:
            conn.close()
        if not rows:
            raise WorkspaceError(
                f"workspace '{self.workspace}' has no usable source images; run `augment --train-dir DIR "
                f"--workspace {self.workspace}` first."
            )
        self.classes: list[str] = sorted({label for _, label, _ in rows})
        self.class_to_idx: dict[str, int] = {name: i for i, name in enumerate(self.classes)}
        # numpy arrays, not lists of Python objects: forked workers share them without copy-on-read
        self.source_ids = np.array([r[0] for r in rows], dtype=np.int64)
        self.targets = np.array([self.class_to_idx[r[1]] for r in rows], dtype=np.int64)
        self.generated_counts = np.array([r[2] for r in rows], dtype=np.int64)

    # bookkeeping ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.source_ids)

    def __repr__(self) -> str:
        low, high = self.lam_range
        lam = f"{low:g}" if low == high else f"({low:g}, {high:g})"
        prompts = "" if self.prompts is None else f", prompts={list(self.prompts)}"
        return (f"DiffuseMixDataset('{self.workspace}', {len(self)} sources, {len(self.classes)} classes, "
                f"{self.sources_with_generated} with {self.status} Î{prompts}, p={self.p:g}, lam={lam}, "
                f"epoch={self.epoch})")

    @property
    def sources_with_generated(self) -> int:
        """How many sources have at least one cached Î of the wanted status."""
        return int((self.generated_counts > 0).sum())

    @property
    def p(self) -> float:
        """The probability that an item is a DiffuseMix image (:meth:`set_p` changes it, e.g. per epoch)."""
        return float(self._p)

    def set_p(self, p: float) -> None:
        """Make the next items use probability `p` (a curriculum: call it with :meth:`set_epoch`)."""
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            raise BadArgumentError(f"p (the probability of a DiffuseMix image) must be in [0, 1], got {p!r}.")
        self._p.fill_(float(p))

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Make the next items draw from `epoch` (call it before iterating each epoch)."""
        self._epoch.fill_(check_int("epoch", epoch, minimum=0))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_conn"] = state["_conn_pid"] = state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _images(self, source_id: int) -> tuple[str, list[str]]:
        with self._lock:
            if self._conn is None or self._conn_pid != os.getpid():  # first use, or a forked worker's first use
                self._conn, self._conn_pid = open_manifest(self.workspace), os.getpid()
            return manifest_images(self._conn, source_id, self.status, self.prompts)

    # 1. sample -------------------------------------------------------------------------------------------
    def draw(self, index: int, n_generated: int, count: int = 1, epoch: int | None = None) -> list[Draw]:
        """The `count` draws of item `index` in `epoch` (default: the current one) for a source with `n_generated`
        cached Î. Every value is drawn whatever the others are, so e.g. p never shifts the mask draws."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch), int(index)])
        low, high = self.lam_range
        p = self.p
        ids = self.fractals.ids
        draws = []
        for _ in range(count):
            augment = bool(rng.random() < p)
            pick = rng.random()
            which = min(int(pick * n_generated), n_generated - 1) if n_generated else -1
            mask = self.masks[int(rng.integers(len(self.masks)))]
            fractal = ids[int(rng.integers(len(ids)))]
            lam = low + (high - low) * float(rng.random())
            draws.append(Draw(augment=augment and n_generated > 0, generated=which, mask=mask, fractal=fractal,
                              lam=lam))
        return draws

    # 2. apply --------------------------------------------------------------------------------------------
    def __getitem__(self, index: int):
        index = operator.index(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sources")
        original_path, generated_paths = self._images(int(self.source_ids[index]))
        label = int(self.targets[index])
        read = self._small if self.cache else (lambda relpath: load_image(self.workspace / relpath))
        original = read(original_path)
        decoded: dict[int, np.ndarray] = {}

        def generated(which: int) -> np.ndarray:
            if which not in decoded:
                decoded[which] = read(generated_paths[which])
            return decoded[which]

        if self.jsd:
            draws = [dataclasses.replace(d, augment=d.generated >= 0)
                     for d in self.draw(index, len(generated_paths), count=2)]
            views = [self._finish(original)] + [self._mix(original, generated(d.generated), d) if d.augment
                                                else self._finish(original) for d in draws]
            return tuple(views), label
        (d,) = self.draw(index, len(generated_paths))
        return (self._mix(original, generated(d.generated), d) if d.augment else self._finish(original)), label

    def _small(self, relpath: str) -> np.ndarray:
        """A stored image resized and centre-cropped to the training size, from the cache (filled on first use)."""
        target = self.workspace / "cache" / f"train-{self.size}" / f"{Path(relpath).stem}.npy"
        try:
            return np.load(target)
        except (FileNotFoundError, ValueError, OSError):
            small = resize_center_crop(load_image(self.workspace / relpath), self.size)
            target.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.save(buffer, small)
            atomic_write(target, buffer.getvalue(), durable=False)  # several workers may fill it at once
            return small

    def _mix(self, original: np.ndarray, generated: np.ndarray, d: Draw):
        h, w = original.shape[:2]
        mixed = hybrid(original, generated, make_mask(d.mask, h, w, feather=self.feather))
        if self.transform is not None:  # full resolution for the user's pipeline
            return self.transform(Image.fromarray(blend(mixed, self.fractals.fit(d.fractal, h, w), d.lam)))
        small = mixed if (h, w) == (self.size, self.size) else resize_center_crop(mixed, self.size)
        return to_tensor(blend(small, self.fractals.fit(d.fractal, self.size, self.size), d.lam))

    def _finish(self, image: np.ndarray):
        if self.transform is not None:
            return self.transform(Image.fromarray(image))
        if image.shape[:2] == (self.size, self.size):  # from the cache: already at the training size
            return to_tensor(image)
        return to_tensor(resize_center_crop(image, self.size))


class ImageFiles(torch.utils.data.Dataset):
    """(file, class index) pairs read lazily, preprocessed like :class:`DiffuseMixDataset`'s originals.

    The validation set and the export arm's augmentation files. ``ds[i]`` is ``(image, label_index)``.
    """

    def __init__(self, items: Sequence[tuple[str | Path, int]], *, size: int = 224,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        self.paths = [str(path) for path, _ in items]
        self.targets = np.array([int(label) for _, label in items], dtype=np.int64)
        self.size = check_int("size", size, minimum=1)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = load_image(self.paths[index])
        label = int(self.targets[index])
        if self.transform is not None:
            return self.transform(Image.fromarray(image)), label
        return to_tensor(resize_center_crop(image, self.size)), label


def image_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, str]]]:
    """(sorted class names, (file, class name) for every image) of ``root/<class>/<image>``.

    The rules of the bulk run's train dir: a class is a top-level folder (its name exactly as on disk), images
    are found recursively by extension, hidden files and folders and ``__MACOSX`` are ignored.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise BadArgumentError(f"validation folder '{folder}' does not exist; pass --val-dir DIR holding "
                               "DIR/<class>/<image>.")
    classes, items = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in IGNORED_DIRS or not entry.is_dir():
            continue
        found = []
        for dirpath, dirnames, filenames in os.walk(entry.path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in IGNORED_DIRS)
            found.extend(Path(dirpath, name) for name in sorted(filenames)
                         if not name.startswith(".") and is_image_path(name))
        if found:
            classes.append(entry.name)
            items.extend((path, entry.name) for path in found)
    return classes, items
