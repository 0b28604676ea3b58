"""The workspace folder as a whole: open it safely, keep files and rows consistent, back it up, check it.

A workspace is a folder::

    W/manifest.sqlite          the manifest (manifest.py): every source, generation, augmentation and decision
    W/images/ab/<sha256>.png   the image store (store.py): I, Î and fractal images, each once
    W/backups/                 consistent copies of the manifest, taken before every bulk run and bulk review
    W/.lock                    the advisory lock a bulk run holds (a second run on the same workspace waits)

Rules that keep images safe (docs/workspace.md, "Safety"):

* a store that holds images but whose manifest is missing, empty or unreadable is never opened: one sentence says
  what is wrong and how to restore a backup, and nothing is created or deleted;
* clean-up (:meth:`Workspace.gc`) only removes files that the manifest's own crash journal names as written by a
  process that is no longer running, and temp files of dead writers; a file the manifest does not know is reported
  by :meth:`Workspace.check` and removed only by ``check --fix``, after the report.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from .decisions import Decision, decide, undo_last
from ..errors import WorkspaceError
from .manifest import MANIFEST_NAME, SCHEMA_VERSION, Manifest, check_status, generation_cache_key, write
from .files import UNLABELLED, atomic_target, dead_temp_files, pid_alive, remove_dead_temp_files
from .store import ImageStore
from .thumbnails import Thumbnails

if TYPE_CHECKING:
    from ..engine.diffusemix import AugmentationRecord
    from .export import ExportResult

__all__ = ["BACKUPS_DIR", "KEEP_BACKUPS", "CheckReport", "Workspace"]

log = logging.getLogger(__name__)

BACKUPS_DIR = "backups"
KEEP_BACKUPS = 5
LOCK_NAME = ".lock"
INIT_LOCK_NAME = ".init-lock"


@dataclass
class CheckReport:
    """What :meth:`Workspace.check` found (and, with fix, removed)."""

    integrity_errors: list[str] = field(default_factory=list)
    referenced: int = 0
    files: int = 0
    orphans: list[str] = field(default_factory=list)  # store files no row refers to
    missing: list[str] = field(default_factory=list)  # referenced files that are not in the store
    temp_files: int = 0  # temp files of dead writers: in the store, and temp zips of killed exports
    removed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.integrity_errors or self.orphans or self.missing or self.temp_files)


class Workspace:
    """A folder with ``manifest.sqlite`` and ``images/``; see the module docstring and docs/workspace.md."""

    def __init__(self, path: str | Path, *, create: bool = True, durable: bool = True, clean_up: bool = True) -> None:
        """Open (or, with `create`, make) the workspace at `path`; refuses a store whose manifest is damaged.

        With `clean_up` (default), temp files of writers that died are removed on the way; ``check`` opens with
        ``clean_up=False`` so that its report comes before any removal.
        """
        self.path = Path(path)
        self.db_path = self.path / MANIFEST_NAME
        self.manifest = Manifest(self.db_path)
        self.store = ImageStore(self.path, durable=durable)
        self.thumbnails = Thumbnails(self.path)  # gallery previews of A (derived, in W/cache)
        if self.path.exists() and not self.path.is_dir():
            raise WorkspaceError(f"workspace '{self.path}' is a file; pass a folder (it is created if missing).")
        self._refuse_damaged_manifest()
        if not self.db_path.exists():
            if not create:
                raise WorkspaceError(
                    f"no workspace at '{self.path}' (no {MANIFEST_NAME}); run `augment --workspace {self.path}` first."
                )
            self.path.mkdir(parents=True, exist_ok=True)
        self.store.path.mkdir(exist_ok=True)
        self._open_schema()
        if clean_up:
            self.store.remove_dead_temp_files()

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    @property
    def images_path(self) -> Path:
        return self.store.path

    # opening safely --------------------------------------------------------------------------------------
    def _refuse_damaged_manifest(self) -> None:
        """Stop, touching nothing, when the store holds images but the manifest is missing, empty or unreadable."""
        problem = None
        if not self.db_path.exists():
            problem = f"its manifest {self.db_path} is missing"
        elif self.db_path.stat().st_size == 0:
            problem = f"its manifest {self.db_path} is empty (0 bytes)"
        else:
            try:
                with contextlib.closing(sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=ro", uri=True)) as c:
                    tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                    if "augmentations" not in tables or "sources" not in tables:
                        problem = f"its manifest {self.db_path} holds no augmentations table"
            except sqlite3.DatabaseError as exc:
                problem = f"its manifest {self.db_path} cannot be read ({exc})"
        if problem is None or not self.store.holds_images():
            return
        raise WorkspaceError(f"workspace '{self.path}' holds images but {problem}; nothing was changed: "
                             + self.restore_advice())

    def restore_advice(self) -> str:
        """How to get the manifest back: the newest backup's copy command, or what to do without one."""
        backups = self.backups()
        if backups:
            return (f"restore the newest backup with `cp '{backups[-1]}' '{self.db_path}'` (older ones are in "
                    f"{self.path / BACKUPS_DIR}), then run `python -m diffusemix_core check --workspace '{self.path}'`.")
        return (f"no backup exists in {self.path / BACKUPS_DIR}; restore {MANIFEST_NAME} from your own backup, or move "
                f"the folder away and start a new workspace.")

    def _open_schema(self) -> None:
        """Create or migrate the schema, one process at a time (switching to WAL needs the file to itself)."""
        fd = os.open(self.path / INIT_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.closing(sqlite3.connect(self.db_path, timeout=30)) as conn:
                row = None
                with contextlib.suppress(sqlite3.OperationalError):
                    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is not None and row[0] != SCHEMA_VERSION:
                self.backup(f"schema-{row[0]}")
            self.manifest.create_or_migrate()
        finally:
            os.close(fd)

    # backups -----------------------------------------------------------------------------------------------
    def backups(self) -> list[Path]:
        """The manifest backups, oldest first."""
        folder = self.path / BACKUPS_DIR
        return sorted(folder.glob("manifest-*.sqlite")) if folder.is_dir() else []

    def backup(self, reason: str) -> Path:
        """A consistent copy of the manifest (SQLite's backup API) in ``W/backups``; keeps the last KEEP_BACKUPS."""
        folder = self.path / BACKUPS_DIR
        folder.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:].replace(".", "-")
        safe_reason = "".join(c if c.isalnum() or c in "-_" else "-" for c in reason)[:40]
        target = folder / f"manifest-{stamp}-{safe_reason}.sqlite"
        with atomic_target(target, durable=self.store.durable) as tmp:
            with contextlib.closing(sqlite3.connect(self.db_path, timeout=30)) as source, \
                    contextlib.closing(sqlite3.connect(tmp)) as copy:
                source.backup(copy)
        for old in self.backups()[:-KEEP_BACKUPS]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        remove_dead_temp_files(folder.iterdir())
        return target

    # the run lock ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run_lock(self, what: str, *, wait: bool = True, on_wait=None) -> Iterator[None]:
        """Hold the workspace's advisory lock for a bulk run; a second holder waits (or fails when not `wait`).

        `on_wait(holder)` is called once with the holder's description (pid, host, what, since) before waiting.
        """
        lock_path = self.path / LOCK_NAME
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = self.lock_holder() or "another process"
                if not wait:
                    raise WorkspaceError(f"workspace '{self.path}' is busy: {holder} holds it; wait for it to "
                                         "finish or stop it, then run again.") from None
                if on_wait is not None:
                    on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                               "since": time.strftime("%Y-%m-%d %H:%M:%S")})
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing releases the lock

    def lock_holder(self) -> str | None:
        """Who holds the run lock, in words (from the lock file), or None when nobody has written it."""
        try:
            info = json.loads((self.path / LOCK_NAME).read_text() or "null")
        except (OSError, ValueError):
            return None
        if not info:
            return None
        return f"{info.get('what', 'a run')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"

    # consistency --------------------------------------------------------------------------------------------
    def gc(self) -> int:
        """Remove files of writers that died: those their journal names and their temp files. Returns the count.

        A store file that no row references but no dead writer's journal names is NOT removed here (a damaged or
        replaced manifest must never cost images): :meth:`check` reports it and ``fix=True`` removes it.
        """
        removed = self.store.remove_dead_temp_files()
        paths, pids = self.manifest.dead_writer_files()
        if paths:
            referenced = self.manifest.referenced_paths()
            for rel in sorted(paths - referenced):
                if self.store.is_relpath(rel):
                    with contextlib.suppress(FileNotFoundError):
                        self.store.abspath(rel).unlink()
                        removed += 1
        self.manifest.forget_writers(pids)
        if removed:
            log.info("removed %d file(s) left by an interrupted run in %s", removed, self.store.path)
        return removed

    def check(self, *, fix: bool = False) -> CheckReport:
        """SQLite's integrity check, then the store against the manifest: orphans, missing files, temp files.

        With `fix`, after the report is made: temp files of dead writers and orphans are removed (never when the
        manifest fails its integrity check: a damaged manifest cannot say which files are orphans).
        """
        from .export import dead_export_temps

        started = time.perf_counter()
        try:
            report = CheckReport(integrity_errors=self.manifest.integrity_errors())
        except sqlite3.DatabaseError as exc:  # damaged so badly that the check itself stops
            report = CheckReport(integrity_errors=[f"the integrity check stopped: {exc}"])
        files = {p.relative_to(self.path).as_posix() for p in self.store.iter_files()}
        temps = dead_temp_files(self.store.iter_files(temp=True))
        try:
            with self.manifest.session() as db:
                db.conn.execute("BEGIN")  # one snapshot for every read
                referenced = self.manifest.referenced_paths(db)
                live = {r[0] for r in db.execute("SELECT path, pid FROM pending_files") if pid_alive(r[1])}
                db.conn.execute("COMMIT")
            temps += dead_export_temps(self)
        except sqlite3.DatabaseError as exc:  # the store cannot be compared with rows that cannot be read
            report.integrity_errors.append(f"reading the rows failed: {exc}")
            referenced, live = set(), set()
        report.referenced, report.files = len(referenced), len(files)
        if not report.integrity_errors:  # a damaged manifest cannot say which files are orphans
            report.orphans = sorted(files - referenced - live)
            report.missing = sorted(referenced - files)
        report.temp_files = len(temps)
        if fix and not report.integrity_errors:  # after the report: what it found, nothing else
            for path in temps:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    report.removed += 1
            for rel in report.orphans:
                with contextlib.suppress(FileNotFoundError):
                    self.store.abspath(rel).unlink()
                    report.removed += 1
        report.seconds = time.perf_counter() - started
        return report

    # single records (the app) -----------------------------------------------------------------------------
    def save_record(self, record: AugmentationRecord, *, status: str = "pending", origin: str = "app",
                    remixed_from: int | None = None) -> int:
        """Store one record (I, Î, F and its rows), record the decision `status`, and return the augmentation id.

        Saving the same record again returns the same id; a different status on a second save is a new decision
        (the last one wins, and both are in the history).
        """
        status = check_status(status)
        original_rel, original_png = self.store.encode(record.original)
        generated_rel, generated_png = self.store.encode(record.generated)
        fractal_rel, fractal_png = self.store.encode(record.fractal)
        files = {original_rel: original_png, generated_rel: generated_png, fractal_rel: fractal_png}
        pixels = original_rel.rsplit("/", 1)[1][:-4]
        cache_key = generation_cache_key(pixels, record.prompt_text, dict(record.settings), record.requested_seed)
        choices = {k: v for k, v in record.choices().items() if k not in ("drift",)}
        job_key = "app:" + hashlib.sha256(json.dumps(
            {"generated": generated_rel, "fractal": fractal_rel, "choices": choices}, sort_keys=True, default=str
        ).encode()).hexdigest()[:32]
        source_name = record.source or _upload_name(pixels)
        relpaths = sorted(files)
        self.manifest.journal(relpaths)
        self.store.put_many(list(files.items()))
        h, w = record.original.shape[:2]
        with self.manifest.session() as db:
            with write(db):
                source_id = self.manifest.insert_source(
                    db, path=source_name, label=record.label, sha256=pixels, pixels_sha256=pixels, width=w, height=h,
                    image_path=original_rel, origin="app")
                generation_id = self.manifest.insert_generation(db, record, source_id=source_id, cache_key=cache_key,
                                                                path=generated_rel)
                aug_id, _ = self.manifest.insert_augmentation(
                    db, record, source_id=source_id, generation_id=generation_id, job_key=job_key, slot=None,
                    fractal_path=fractal_rel, status="pending", remixed_from=remixed_from)
                self.manifest.unjournal(db, relpaths)
            decide(self.manifest, status, origin=origin, ids=[aug_id], db=db)
        return aug_id

    def load_record(self, augmentation_id: int) -> AugmentationRecord:
        """Rebuild a record from the stored I, Î and fractal: M, H, F and A composed again, no model call."""
        return self.record_from_row(self.manifest.get_augmentation(augmentation_id))

    def record_from_row(self, row: dict) -> AugmentationRecord:
        """The record of a row of ``Manifest.list_augmentations`` / ``get_augmentation``, composed from the store."""
        from ..engine.diffusemix import AugmentationRecord, mix

        original = self.store.read(row["source_image_path"])
        generated = self.store.read(row["generation_path"])
        if not row.get("fractal_path"):
            raise WorkspaceError(f"augmentation {row['id']} has no stored fractal; it cannot be composed.")
        fractal_source = self.store.read(row["fractal_path"])
        mask, hyb, frac, final = mix(original, generated, fractal_source, mask_kind=row["mask"],
                                     lam=float(row["lam"]), feather=int(row["feather"]))
        app_source = row["origin"] == "app"
        return AugmentationRecord(
            original=original, generated=generated, mask=mask, hybrid=hyb, fractal=frac, final=final,
            prompt=row["prompt"], prompt_text=row["prompt_text"], template=row["template"] or "",
            mask_kind=row["mask"], fractal_id=row["fractal"], lam=float(row["lam"]), feather=int(row["feather"]),
            requested_seed=int(row["seed"]), used_seed=int(row["used_seed"]), model=row["model"],
            settings=json.loads(row["settings"] or "{}"), is_test_model=bool(row["is_test_model"]),
            drift=row["drift"],
            label=None if app_source and row["label"] == UNLABELLED else row["label"],
            source=None if app_source and row["source_path"] == _upload_name(row["pixels_sha256"])
            else row["source_path"],
        )

    def final_image(self, row: dict) -> np.ndarray:
        """A of one augmentation row: the stored file when the row has one (schema 1), else composed."""
        if row.get("path"):
            return self.store.read(row["path"])
        return self.record_from_row(row).final

    # decisions ------------------------------------------------------------------------------------------------
    def review(self, status: str, *, origin: str = "cli", label=None, prompt=None, max_drift=None, min_drift=None,
               ids=None, current_status: str | None = None, note=None) -> Decision:
        """Set `status` on every augmentation matching ALL the filters (none: all), recorded with its origin.

        A bulk decision (anything but one id) is preceded by a backup of the manifest.
        """
        if not (ids is not None and len(set(ids)) == 1):
            self.backup(f"review-{status}")
        return decide(self.manifest, status, origin=origin, label=label, prompt=prompt, max_drift=max_drift,
                      min_drift=min_drift, ids=ids, current_status=current_status, note=note)

    def undo_last_review(self, *, origin: str = "cli"):
        """Revert the last bulk decision (``decisions.undo_last``); None when there is nothing to undo."""
        return undo_last(self.manifest, origin=origin)

    # export ------------------------------------------------------------------------------------------------
    def export(self, to: str | Path, **options) -> ExportResult:
        """Write an ImageFolder copy of the selected augmentations (``export.export_workspace``)."""
        from .export import export_workspace

        return export_workspace(self, to, **options)


def _upload_name(pixels_key: str) -> str:
    """The source name of an app record that came without one."""
    return f"upload:{pixels_key[:16]}"
