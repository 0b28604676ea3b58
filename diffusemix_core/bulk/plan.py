"""The plan stage of a bulk run: which augmentations each file still needs, as a stream, and whether they can fit.

* :class:`Jobs`: the augmentations every image should have (``slot:0`` … ``slot:m-1``, or ``prompt:<p>`` for
  every enabled prompt), a lazy sequence: a count of 10⁹ costs nothing until it is planned;
* :func:`count_missing`: how many of them the manifest does not hold yet (the progress bar's total), counted
  without listing them; :func:`check_manifest_fits` refuses, in one sentence and before anything starts, a count
  whose manifest rows alone could not fit on the workspace's disk;
* :class:`Planner` (the manifest's reader): read and hash each file (a regular file only: :func:`read_regular_file`
  never blocks on a FIFO), find its missing slots, draw each one's :class:`Choice` from an rng seeded by (run seed,
  file sha256, slot) only, and attach any Î already generated with the same cache key (its bytes travel with the
  slot, so no shared disk is needed). A file with more than ``max_slots`` missing slots is planned as several
  consecutive :class:`~.stages.Source` pieces, so a batch never holds more than ``batch_size × max_slots`` slots
  whatever ``--per-image`` asks for.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import shutil
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from ..errors import BadArgumentError
from ..workspace.manifest import Manifest, generation_cache_key
from ..workspace.store import ImageStore
from .stages import Batch, Slot, Source

if TYPE_CHECKING:
    from ..engine.diffusemix import Mixer

__all__ = ["MAX_SLOTS_PER_SOURCE", "Jobs", "Planner", "check_manifest_fits", "count_missing",
           "manifest_bytes_per_augmentation", "read_regular_file", "slot_rng"]

MAX_SLOTS_PER_SOURCE = 64  # slots of one file planned together; more are planned as further pieces of the file


@dataclass(frozen=True)
class Jobs:
    """The augmentations every image should have: ``slot:0`` … ``slot:<per_image - 1>``, or with `prompts` one
    ``prompt:<p>`` per prompt. Iterating gives ``(job_key, slot, fixed prompt)``; nothing is listed in memory."""

    per_image: int = 1
    prompts: tuple[str, ...] | None = None
    _prompt_keys: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.prompts is not None:
            object.__setattr__(self, "prompts", tuple(self.prompts))
            object.__setattr__(self, "_prompt_keys", frozenset(f"prompt:{p}" for p in self.prompts))

    def __len__(self) -> int:
        return self.per_image if self.prompts is None else len(self.prompts)

    def __iter__(self) -> Iterator[tuple[str, int | None, str | None]]:
        if self.prompts is not None:
            return ((f"prompt:{p}", None, p) for p in self.prompts)
        return ((f"slot:{i}", i, None) for i in range(self.per_image))

    def __contains__(self, job_key: object) -> bool:
        if self.prompts is not None:
            return job_key in self._prompt_keys
        kind, _, number = str(job_key).partition(":")
        return kind == "slot" and number.isdigit() and str(int(number)) == number and int(number) < self.per_image


def slot_rng(seed: int, file_sha256: str, job_key: str) -> np.random.Generator:
    """The rng of one augmentation slot: depends on nothing but the run seed, the file and the slot."""
    digest = hashlib.sha256(f"{file_sha256}\0{job_key}".encode("utf-8")).digest()
    words = np.frombuffer(digest[:16], dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


def read_regular_file(path: Path) -> bytes:
    """The bytes of `path`; OSError if it is not a regular file. Opened without blocking, so a FIFO put in place of
    an image after the scan (``runner.scan_train_dir`` skips those it sees) cannot hang the plan."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return file.read()


# ------------------------------------------------------------------------------------------------ how many
def count_missing(manifest: Manifest, files: Sequence[tuple[str, str]], jobs: Jobs) -> int:
    """Slots still to make if no file changed since the last run (the progress bar's total): each file's jobs
    less those the manifest holds for its path, counted without listing the jobs."""
    done: dict[str, set[str]] = {}
    with manifest.session() as db:
        for path, job_key in db.execute(
                "SELECT s.path, a.job_key FROM augmentations a JOIN sources s ON s.id = a.source_id "
                "WHERE s.origin = 'dataset'"):
            if job_key in jobs:
                done.setdefault(path, set()).add(job_key)
    return sum(len(jobs) - len(done.get(rel, ())) for rel, _ in files)


# A low estimate of the bytes SQLite needs per column value of a new row, by declared type: an INTEGER of a few
# bytes, a REAL of 8, a TEXT of at least a short word (the schema's TEXT columns hold hashes, paths, timestamps,
# prompts and JSON, most of them far longer); one byte of record header per column and ten per index entry.
_COLUMN_BYTES = {"INTEGER": 2, "REAL": 8, "TEXT": 16}
_HEADER_BYTES, _INDEX_ENTRY_BYTES = 1, 10


def manifest_bytes_per_augmentation(db) -> int:
    """An estimate, from the schema, of the manifest bytes one new augmentation takes: its ``augmentations`` and
    ``generations`` rows (every Î of a bulk run is new) with their index entries. It stays below what a real row
    takes (``tests/test_bulk_limits.py`` checks it against a run's manifest), so a count refused for it could never
    fit."""
    total = 0
    for table in ("augmentations", "generations"):
        for _, _, declared, *_ in db.execute(f"PRAGMA table_info({table})"):
            total += _HEADER_BYTES + _COLUMN_BYTES.get(str(declared).split()[0].upper() if declared else "", 8)
        indexes = db.execute(f"PRAGMA index_list({table})").fetchall()
        total += _INDEX_ENTRY_BYTES * len(indexes)
    return total


def check_manifest_fits(manifest: Manifest, count: int, folder: Path) -> None:
    """BadArgumentError, in one sentence, when `count` new augmentations' manifest rows alone (estimated from the
    schema) need more than the free space of `folder`'s disk."""
    if count <= 0:
        return
    with manifest.session() as db:
        per_row = manifest_bytes_per_augmentation(db)
    need, free = count * per_row, shutil.disk_usage(folder).free
    if need > free:
        raise BadArgumentError(
            f"{count:,} augmentations are asked for, whose manifest rows alone need about {_size(need)} (at least "
            f"{per_row} bytes each), and the disk of '{folder}' has {_size(free)} free; ask for fewer (a smaller "
            "--per-image) or choose a --workspace on a disk with room for them.")


def _size(n: float) -> str:
    """Bytes in words: 950 bytes, 78.4 GB, 1,350.0 PB."""
    if n < 1000:
        return f"{n:,.0f} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:,.1f} PB"


# ------------------------------------------------------------------------------------------------ the planner
class Planner:
    """Which slots each file still needs, with their choices and any Î already made (reads the manifest only)."""

    def __init__(self, manifest: Manifest, store: ImageStore, train_dir: Path, mixer: Mixer, jobs: Jobs, *,
                 seed: int, settings_key: dict, max_slots: int | None = None) -> None:
        self.manifest, self.store, self.train_dir, self.mixer = manifest, store, train_dir, mixer
        self.jobs, self.seed, self.settings_key = jobs, seed, settings_key
        self.max_slots = MAX_SLOTS_PER_SOURCE if max_slots is None else max_slots

    def batches(self, files: Sequence[tuple[str, str]], batch_size: int,
                cancel: threading.Event | None = None) -> Iterator[Batch]:
        """Batches of `batch_size` sources (files, or pieces of a file) that need work; complete files are counted
        in ``Batch.skipped``."""
        index, sources, skipped = 0, [], 0
        with self.manifest.session() as db:
            for rel, label in files:
                if cancel is not None and cancel.is_set():
                    return
                planned = False
                for source in self.plan_source(db, rel, label):
                    planned = True
                    sources.append(source)
                    if len(sources) == batch_size:
                        yield Batch(index, sources, skipped)
                        index, sources, skipped = index + 1, [], 0
                    if cancel is not None and cancel.is_set():
                        return
                skipped += not planned
        if sources or skipped:
            yield Batch(index, sources, skipped)

    def plan_source(self, db, rel: str, label: str) -> Iterator[Source]:
        """The Source of one file in pieces of at most ``max_slots`` slots (nothing when every slot is in the
        manifest already; one failed Source when the file cannot be read or failed before)."""
        source = Source(rel=rel, label=label)
        try:
            source.data = read_regular_file(self.train_dir / rel)
        except OSError as exc:
            source.error, source.error_recorded = f"cannot read the file ({exc.strerror or exc})", True
            yield source
            return
        source.sha256 = hashlib.sha256(source.data).hexdigest()
        row = db.execute("SELECT id, status, error, pixels_sha256 FROM sources WHERE path = ? AND sha256 = ?",
                         [rel, source.sha256]).fetchone()
        if row is not None and row[1] == "failed":
            source.data, source.error, source.error_recorded = None, row[2], True
            yield source
            return
        existing: set[str] = set()
        if row is not None:
            source.source_id, source.pixels_sha256 = row[0], row[3]
            existing = {r[0] for r in db.execute("SELECT job_key FROM augmentations WHERE source_id = ?", [row[0]])}
        missing = (job for job in self.jobs if job[0] not in existing)
        for piece in itertools.count():
            chunk = list(itertools.islice(missing, self.max_slots))
            if not chunk:
                return
            part = Source(rel=rel, label=label, sha256=source.sha256, data=source.data, source_id=source.source_id,
                          pixels_sha256=source.pixels_sha256, first=piece == 0)
            for job_key, slot, fixed_prompt in chunk:
                choice = self.mixer.sample(slot_rng(self.seed, part.sha256, job_key), 1, prompt=fixed_prompt)[0]
                part.slots.append(Slot(job_key=job_key, slot=slot, choice=choice,
                                       prompt_text=self.mixer.prompts.render(choice.prompt)))
            if part.pixels_sha256 is not None:
                self._find_cached(db, part)
            yield part

    def _find_cached(self, db, source: Source) -> None:
        """Attach the Î already in the workspace (same cache key) to the slots, with their bytes."""
        for slot in source.slots:
            slot.cache_key = generation_cache_key(source.pixels_sha256, slot.prompt_text, self.settings_key,
                                                  slot.choice.seed)
            row = db.execute("SELECT id, path, seed FROM generations WHERE cache_key = ?", [slot.cache_key]).fetchone()
            if row is not None and self.store.is_relpath(row[1]) and self.store.abspath(row[1]).exists():
                slot.generation_id, slot.generation_path, slot.used_seed = row
                slot.generated_png = self.store.read_bytes(row[1])
