"""The workspace folder as a whole: open it safely, keep files and rows consistent, back it up, check it.

A workspace is a folder::

    W/manifest.sqlite          the manifest (manifest.py, schema.py): every source, generation, augmentation, decision
    W/images/ab/<sha256>.png   the image store (store.py): I, Î and fractal images, each once
    W/backups/                 consistent copies of the manifest (backups.py), taken before every bulk run, bulk
                               review and migration
    W/.lock                    the advisory lock a bulk run holds (locks.py: a second run on the same workspace waits)

Rules that keep images safe (docs/workspace.md, "Safety"):

* a store that holds images but whose manifest is missing, empty or unreadable is never opened: one sentence says
  what is wrong and how to restore a backup (``check --restore``), and nothing is created or deleted; a full disk
  is told apart from a damaged file and the advice is then to free space (``health.manifest_problem``);
* clean-up (:meth:`Workspace.gc`) only removes files that the manifest's own crash journal names as written by a
  process that is no longer running (and that no live writer journalled too), and temp files of dead writers; a
  file the manifest does not know is reported by :meth:`Workspace.check` and removed only by ``check --fix``.

The work itself lives in the modules named; :class:`Workspace` ties them to one folder.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import health, records
from .backups import BACKUPS_DIR, KEEP_BACKUPS, list_backups, restore_advice, take_backup
from .decisions import Decision, decide, undo_last
from .export import ExportResult, export_workspace
from .health import CheckReport, Restored
from .locks import init_lock, run_lock
from .manifest import MANIFEST_NAME, Manifest
from .schema import SCHEMA_VERSION
from .store import ImageStore
from .thumbnails import Thumbnails
from ..errors import WorkspaceError

if TYPE_CHECKING:
    from ..engine.diffusemix import AugmentationRecord

__all__ = ["BACKUPS_DIR", "KEEP_BACKUPS", "CheckReport", "Restored", "Workspace", "restore_backup"]


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

    # opening safely --------------------------------------------------------------------------------------
    def _refuse_damaged_manifest(self) -> None:
        """Stop, touching nothing, when the store holds images but the manifest is missing, empty or unreadable
        (a full disk is said as such, whatever the store holds)."""
        if not self.path.is_dir():
            return
        problem = health.manifest_problem(self.db_path)
        if problem is None or not self.store.holds_images():
            return
        raise WorkspaceError(f"workspace '{self.path}' holds images but {problem}; nothing was changed: "
                             + self.restore_advice())

    def restore_advice(self) -> str:
        """How to get the manifest back: ``check --restore`` with what it does, or what to do without a backup."""
        return restore_advice(self.path)

    def _open_schema(self) -> None:
        """Create or migrate the schema, one process at a time (switching to WAL needs the file to itself)."""
        try:
            with init_lock(self.path):
                with contextlib.closing(sqlite3.connect(self.db_path, timeout=30)) as conn:
                    row = None
                    with contextlib.suppress(sqlite3.OperationalError):
                        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is not None and row[0] != SCHEMA_VERSION:
                    self.backup(f"schema-{row[0]}")
                self.manifest.create_or_migrate()
        except (sqlite3.Error, OSError) as exc:
            if health.is_disk_full(exc, self.path):
                raise health.disk_full_error(self.path, exc) from exc
            raise

    # backups and locks ---------------------------------------------------------------------------------------
    def backups(self) -> list[Path]:
        """The manifest backups, oldest first."""
        return list_backups(self.path)

    def backup(self, reason: str) -> Path:
        """A consistent copy of the manifest in ``W/backups`` (``backups.take_backup``)."""
        return take_backup(self.path, reason, durable=self.store.durable)

    def run_lock(self, what: str, *, wait: bool = True,
                 on_wait: Callable[[str], None] | None = None) -> contextlib.AbstractContextManager[None]:
        """Hold the workspace's advisory lock for a bulk run (``locks.run_lock``): a second holder waits."""
        return run_lock(self.path, what, wait=wait, on_wait=on_wait)

    # consistency --------------------------------------------------------------------------------------------
    def gc(self) -> int:
        """Remove files of writers that died and that nothing else needs (``health.gc``); returns the count."""
        return health.gc(self.manifest, self.store)

    def check(self, *, fix: bool = False) -> CheckReport:
        """Integrity, orphans, missing files, dead writers' temp files; with `fix` removed after the report."""
        return health.check(self.manifest, self.store, fix=fix)

    # single records (the app) -----------------------------------------------------------------------------
    def save_record(self, record: AugmentationRecord, *, status: str = "pending", origin: str = "app",
                    remixed_from: int | None = None) -> int:
        """Store one record with the decision `status` and return its augmentation id (``records.save_record``)."""
        return records.save_record(self.manifest, self.store, record, status=status, origin=origin,
                                   remixed_from=remixed_from)

    def load_record(self, augmentation_id: int) -> AugmentationRecord:
        """Rebuild a record from the stored I, Î and fractal: M, H, F and A composed again, no model call."""
        return self.record_from_row(self.manifest.get_augmentation(augmentation_id))

    def record_from_row(self, row: dict) -> AugmentationRecord:
        """The record of a row of ``Manifest.list_augmentations`` / ``get_augmentation``, composed from the store."""
        return records.record_from_row(self.store, row)

    def final_image(self, row: dict) -> np.ndarray:
        """A of one augmentation row: the stored file when the row has one (schema 1), else composed."""
        return records.final_image(self.store, row)

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
        return export_workspace(self.manifest, self.store, to, **options)


def restore_backup(path: str | Path) -> Restored:
    """``check --restore``: replace the damaged or missing manifest of the workspace at `path` by its newest sound
    backup, its -wal and -shm files set aside first (``health.restore_newest_backup``); then open it."""
    restored = health.restore_newest_backup(path)
    Workspace(path, create=False, clean_up=False)  # the schema of an older backup is brought up to date
    return restored
