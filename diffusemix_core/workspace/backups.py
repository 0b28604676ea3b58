"""Backups of the manifest: ``W/backups/manifest-<when>-<why>.sqlite``, taken before every bulk run, bulk review and
schema migration; the last KEEP_BACKUPS are kept.

A backup is written with SQLite's backup API into a temp file (``files.atomic_target``) and renamed into place, so
a backup under its final name is always complete. A writer killed half-way leaves its temp file and SQLite's
``-journal`` beside it (``.tmp-<pid>-<hex>.sqlite-journal``): :func:`dead_backup_temps` finds them for ``check``
and every new backup removes them. How a backup is brought back is ``health.restore_newest_backup``
(``check --restore``); :func:`restore_advice` says so in the words of an error message.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from .files import atomic_target, dead_temp_files, remove_dead_temp_files
from .manifest import MANIFEST_NAME

__all__ = ["BACKUPS_DIR", "KEEP_BACKUPS", "dead_backup_temps", "list_backups", "restore_advice", "take_backup"]

BACKUPS_DIR = "backups"
KEEP_BACKUPS = 5


def list_backups(root: Path) -> list[Path]:
    """The manifest backups of the workspace at `root`, oldest first."""
    folder = Path(root) / BACKUPS_DIR
    return sorted(folder.glob("manifest-*.sqlite")) if folder.is_dir() else []


def take_backup(root: Path, reason: str, *, durable: bool = True) -> Path:
    """A consistent copy of the manifest in ``W/backups``; keeps the last KEEP_BACKUPS, removes dead temp files."""
    folder = Path(root) / BACKUPS_DIR
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:].replace(".", "-")
    safe_reason = "".join(c if c.isalnum() or c in "-_" else "-" for c in reason)[:40]
    target = folder / f"manifest-{stamp}-{safe_reason}.sqlite"
    with atomic_target(target, durable=durable) as tmp:
        with contextlib.closing(sqlite3.connect(Path(root) / MANIFEST_NAME, timeout=30)) as source, \
                contextlib.closing(sqlite3.connect(tmp)) as copy:
            source.backup(copy)
    for old in list_backups(root)[:-KEEP_BACKUPS]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    remove_dead_temp_files(folder.iterdir())
    return target


def dead_backup_temps(root: Path) -> list[Path]:
    """Temp files of backups whose writer died (the copy and SQLite's ``-journal`` of it)."""
    folder = Path(root) / BACKUPS_DIR
    return dead_temp_files(folder.iterdir()) if folder.is_dir() else []


def restore_advice(root: Path) -> str:
    """How to get the manifest back: ``check --restore`` (what it does), or what to do without a backup."""
    root = Path(root)
    backups = list_backups(root)
    if not backups:
        return (f"no backup exists in {root / BACKUPS_DIR}; restore {MANIFEST_NAME} from your own backup, or move "
                f"the folder away and start a new workspace.")
    return (f"restore the newest backup with `python -m diffusemix_core check --workspace '{root}' --restore` (it "
            f"sets the damaged {MANIFEST_NAME} and its -wal and -shm files aside in {root / BACKUPS_DIR}, copies "
            f"{backups[-1].name} in and checks it; copying a backup by hand while stale -wal or -shm files lie "
            f"beside the manifest replays them onto the copy).")
