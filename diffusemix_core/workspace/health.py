"""Is a workspace sound, and how to make it sound again: check it, clean up after killed writers, restore a backup.

* :func:`manifest_problem` says in words what keeps a manifest from being opened (missing, empty, no tables,
  unreadable), and tells a full disk apart from a damaged file (:func:`is_disk_full`): an I/O error on a disk with
  no room left is the disk, not the file, and the advice is then "free some space", never "restore a backup" (a backup
  copied over an intact manifest would throw away every decision made since).
* :func:`check`: SQLite's integrity check, then the store against the rows (orphans, missing files) and the temp
  files and folders of dead writers (store, backups, exports); with ``fix`` they are removed after the report.
* :func:`gc`: what a bulk run removes before it starts: only files the crash journal names for writers that died,
  and never one that a live writer has journalled too (content-addressed files are shared: writer B may have
  skipped writing a file because dead writer A had written it).
* :func:`restore_newest_backup` (``check --restore``): the damaged manifest and its ``-wal``/``-shm`` files are set
  aside (a stale log beside a restored copy would be replayed onto it), the newest sound backup is copied in and
  checked.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..checks import format_size
from ..errors import WorkspaceError
from .backups import BACKUPS_DIR, dead_backup_temps, list_backups
from .export import dead_export_temps
from .files import atomic_target, dead_temp_files
from .locks import run_lock
from .manifest import MANIFEST_NAME, Manifest, write
from .store import ImageStore

__all__ = ["CheckReport", "Restored", "check", "disk_full_error", "gc", "is_disk_full", "manifest_problem",
           "restore_newest_backup"]

log = logging.getLogger(__name__)

LOW_SPACE_BYTES = 8 * 1024**2  # below this, SQLite cannot make its -wal and -shm files: an I/O error is the disk
_SIDE_FILES = ("-wal", "-shm", "-journal")


# ------------------------------------------------------------------------------------------------ full or damaged
def free_bytes(folder: Path) -> int | None:
    """Free space on the disk that holds `folder` (its nearest existing parent), or None when it cannot be told."""
    folder = Path(folder).absolute()
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            with contextlib.suppress(OSError):
                return shutil.disk_usage(candidate).free
            return None
    return None


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether `exc` (an OSError or a sqlite3 error met in the workspace at `folder`) comes from a full disk.

    ENOSPC / EDQUOT and SQLite's SQLITE_FULL ("database or disk is full") say so themselves; an I/O error or a file
    that cannot be opened counts as a full disk when the disk has less than LOW_SPACE_BYTES free (SQLite reports a
    full disk while it makes its shared-memory file as a "disk I/O error").
    """
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return True
    elif isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorname", None) or ""
        text = str(exc)
        if code.startswith("SQLITE_FULL") or "database or disk is full" in text:
            return True
        if not (code.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) or "disk I/O error" in text
                or "unable to open" in text):
            return False
    else:
        return False
    free = free_bytes(folder)
    return free is not None and free < LOW_SPACE_BYTES


def disk_full_error(folder: Path, exc: BaseException) -> WorkspaceError:
    """The one-sentence error for a full disk under the workspace at `folder`: free some space first."""
    free = free_bytes(folder)
    left = "" if free is None else f", {format_size(free)} free"
    return WorkspaceError(
        f"the disk holding workspace '{folder}' is full: no space left ({exc}{left}): free some space first, then run the command "
        f"again; the manifest is most likely intact, so do not restore a backup over it (that would lose every "
        f"decision made since the backup).")


def manifest_problem(db_path: Path) -> str | None:
    """What keeps the manifest at `db_path` from being opened, in words (None: nothing).

    Read-only: the file is not changed. A full disk raises :func:`disk_full_error` instead of naming a problem.
    """
    if not db_path.exists():
        return f"its manifest {db_path} is missing"
    if db_path.stat().st_size == 0:
        return f"its manifest {db_path} is empty (0 bytes)"
    try:
        with contextlib.closing(sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        if is_disk_full(exc, db_path.parent):
            raise disk_full_error(db_path.parent, exc) from exc
        return f"its manifest {db_path} cannot be read ({exc})"
    if "augmentations" not in tables or "sources" not in tables:
        return f"its manifest {db_path} holds no augmentations table"
    return None


def _integrity_errors(path: Path) -> list[str]:
    """SQLite's integrity check of the file at `path`, read-only (nothing is written, no log is replayed into it)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            if not {"augmentations", "sources"} <= {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}:
                rows.append("no augmentations table")
    except sqlite3.DatabaseError as exc:
        if is_disk_full(exc, path.parent):
            raise disk_full_error(path.parent, exc) from exc
        return [f"the integrity check stopped: {exc}"]
    return [] if rows == ["ok"] else rows


# ------------------------------------------------------------------------------------------------ check and gc
@dataclass
class CheckReport:
    """What :func:`check` found (and, with fix, removed)."""

    integrity_errors: list[str] = field(default_factory=list)
    referenced: int = 0
    files: int = 0
    orphans: list[str] = field(default_factory=list)  # store files no row refers to
    missing: list[str] = field(default_factory=list)  # referenced files that are not in the store
    temp_files: int = 0  # of dead writers: in the store, in backups/, temp zips and folders of killed exports
    removed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.integrity_errors or self.orphans or self.missing or self.temp_files)


def check(manifest: Manifest, store: ImageStore, *, fix: bool = False) -> CheckReport:
    """SQLite's integrity check, then the store against the manifest: orphans, missing files, temp files.

    With `fix`, after the report is made: temp files of dead writers and orphans are removed (never when the
    manifest fails its integrity check: a damaged manifest cannot say which files are orphans).
    """
    started = time.perf_counter()
    try:
        report = CheckReport(integrity_errors=manifest.integrity_errors())
    except sqlite3.DatabaseError as exc:  # damaged so badly that the check itself stops
        report = CheckReport(integrity_errors=[f"the integrity check stopped: {exc}"])
    files = {p.relative_to(store.root).as_posix() for p in store.iter_files()}
    temps = dead_temp_files(store.iter_files(temp=True)) + dead_backup_temps(store.root)
    try:
        with manifest.session() as db:
            db.conn.execute("BEGIN")  # one snapshot for every read
            referenced = manifest.referenced_paths(db)
            _, live, _ = manifest.journal_state(db)
            db.conn.execute("COMMIT")
        temps += dead_export_temps(manifest)
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
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                report.removed += 1
        for rel in report.orphans:
            with contextlib.suppress(FileNotFoundError):
                store.abspath(rel).unlink()
                report.removed += 1
    report.seconds = time.perf_counter() - started
    return report


def gc(manifest: Manifest, store: ImageStore) -> int:
    """Remove files of writers that died: those their journal names and their temp files. Returns the count.

    A file is kept when a row references it or a live writer has journalled it too. The journal is read and the
    files removed inside one write transaction, so a writer that journals a file after the read waits for the
    removal, and then finds the file gone and writes it again. A store file that no row references but no dead
    writer's journal names is NOT removed here (a damaged or replaced manifest must never cost images):
    :func:`check` reports it and ``fix=True`` removes it.
    """
    removed = store.remove_dead_temp_files()
    with manifest.session() as db, write(db):
        dead, live, pids = manifest.journal_state(db)
        if dead:
            for rel in sorted(dead - live - manifest.referenced_paths(db)):
                if store.is_relpath(rel):
                    with contextlib.suppress(FileNotFoundError):
                        store.abspath(rel).unlink()
                        removed += 1
        manifest.forget_writers(db, pids)
    if removed:
        log.info("removed %d file(s) left by an interrupted run in %s", removed, store.path)
    return removed


# ------------------------------------------------------------------------------------------------ restore
@dataclass(frozen=True)
class Restored:
    """What :func:`restore_newest_backup` did."""

    backup: Path  # the backup copied in
    set_aside: list[Path]  # the damaged manifest and its side files, now in `aside`
    aside: Path
    augmentations: int
    skipped: list[Path] = field(default_factory=list)  # newer backups that failed their own check

    def describe(self) -> str:
        moved = ", ".join(p.name for p in self.set_aside) or "nothing (the manifest was missing)"
        names = ", ".join(p.name for p in self.skipped)
        skipped = f"; newer backups that are damaged themselves were skipped: {names}" if self.skipped else ""
        return (f"restored {self.backup.name} ({self.augmentations} augmentations; what was decided after it was "
                f"taken is not in it); set aside in {self.aside}: {moved}{skipped}.")


def restore_newest_backup(root: str | Path) -> Restored:
    """Replace a damaged or missing manifest by the newest backup that passes SQLite's integrity check.

    Refuses (WorkspaceError, nothing changed) when the manifest is sound, when the disk is full, when no backup
    is sound, or while a bulk run holds the workspace. The damaged manifest and its ``-wal``, ``-shm`` and
    ``-journal`` files are moved to ``W/backups/damaged-<when>/``, never deleted.
    """
    root = Path(root)
    db_path = root / MANIFEST_NAME
    with run_lock(root, "restore of a backup", wait=False):
        problem = manifest_problem(db_path)
        if problem is None:
            errors = _integrity_errors(db_path)
            if not errors:
                raise WorkspaceError(f"the manifest {db_path} is sound (SQLite's integrity check passes), so "
                                     "--restore leaves it as it is; to go back to an older state on purpose, copy a "
                                     f"backup from {root / BACKUPS_DIR} over it after moving its -wal and -shm files "
                                     "away.")
        skipped = []
        for backup in reversed(list_backups(root)):
            if not _integrity_errors(backup):
                break
            skipped.append(backup)
        else:
            raise WorkspaceError(f"no sound backup in {root / BACKUPS_DIR} to restore the manifest {db_path} from; "
                                 f"restore {MANIFEST_NAME} from your own backup, or recover what it holds with "
                                 "`sqlite3 manifest.sqlite .recover`.")
        with atomic_target(db_path) as tmp:
            shutil.copyfile(backup, tmp)
            with contextlib.closing(sqlite3.connect(tmp)) as conn:  # a clean close leaves no -wal or -shm behind
                errors = [r[0] for r in conn.execute("PRAGMA integrity_check")]
                count = conn.execute("SELECT count(*) FROM augmentations").fetchone()[0]
            if errors != ["ok"]:
                raise WorkspaceError(f"the copy of {backup} fails SQLite's integrity check ({errors[0]}); nothing "
                                     "was changed; check the disk, then run `check --restore` again.")
            for suffix in _SIDE_FILES:
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{tmp}{suffix}").unlink()
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            aside = root / BACKUPS_DIR / f"damaged-{stamp}-{time.time_ns() % 10**6:06d}"
            aside.mkdir(parents=True)
            moved = []
            for path in (db_path, *(Path(f"{db_path}{suffix}") for suffix in _SIDE_FILES)):
                if path.exists():
                    path.replace(aside / path.name)
                    moved.append(aside / path.name)
        log.info("restored %s into %s; set aside %s", backup, db_path, [p.name for p in moved])
        return Restored(backup=backup, set_aside=moved, aside=aside, augmentations=count, skipped=skipped)
