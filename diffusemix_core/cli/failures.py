"""One sentence for a command's failure: what failed, on which file, and what to do.

``cli.main`` prints it on one line instead of a traceback: the project's errors as they are, SQLite's errors as a
state of the workspace's manifest (they carry no file name), OS errors naming the file and the option whose folder
holds it, and anything else as unexpected, with a pointer to ``--verbose``.
"""

from __future__ import annotations

import argparse
import errno
import os
import sqlite3
from pathlib import Path

from ..errors import DiffuseMixError

__all__ = ["failure_message"]


def failure_message(exc: Exception, args: argparse.Namespace) -> str:
    """One sentence for `exc`: what failed, on which file, and what to do."""
    if isinstance(exc, DiffuseMixError):
        return str(exc)
    if isinstance(exc, sqlite3.DatabaseError):
        return _database_message(exc, args)
    if isinstance(exc, OSError):
        return _os_error_message(exc, args)
    return f"unexpected {type(exc).__name__}: {exc}; rerun with --verbose for the traceback and report it."


def _rerun(args: argparse.Namespace) -> str:
    if getattr(args, "command", None) == "augment":
        return "rerun the same command: the run resumes where it stopped"
    return "rerun the same command"


def _option_for(path: str | os.PathLike | None, args: argparse.Namespace) -> str | None:
    """The command-line option whose folder holds `path` or lies under it (e.g. '--workspace'), if any."""
    if path is None:
        return None
    target = Path(_path_text(path)).absolute()
    for dest in ("workspace", "to", "out", "train_dir", "prompt_file", "fractal_dir"):
        value = getattr(args, dest, None)
        if isinstance(value, (str, os.PathLike)):
            folder = Path(value).absolute()
            if target == folder or folder in target.parents or target in folder.parents:
                return "--" + dest.replace("_", "-")
    return None


def _output_folder(args: argparse.Namespace) -> Path | None:
    """The folder the command writes to: the export or preview folder, else the workspace."""
    for dest in ("to", "out", "workspace"):
        value = getattr(args, dest, None)
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
    return None


def _path_text(path) -> str:
    return os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)


def _os_error_message(exc: OSError, args: argparse.Namespace) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    path = exc.filename if isinstance(exc.filename, (str, bytes, os.PathLike)) else None
    name = None if path is None else f"'{_path_text(path)}'"
    if name is not None and exc.filename2 is not None:
        name += f" (to '{_path_text(exc.filename2)}')"
    option = _option_for(path, args)
    elsewhere = f"choose another {option}" if option else "choose another folder"
    folder = _output_folder(args)
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        where = f"writing {name}" if name else (f"writing to '{folder}'" if folder else "writing")
        return f"no space left on the device while {where} ({reason}); free some space and {_rerun(args)}."
    if exc.errno == errno.EROFS:
        what = name or (f"'{folder}'" if folder else "the output folder")
        return (f"{what} is on a read-only file system ({reason}); {elsewhere} on a writable disk and "
                f"{_rerun(args)}.")
    if exc.errno in (errno.EACCES, errno.EPERM):
        what = name or "a file"
        return (f"permission denied for {what} ({reason}); give yourself access to it (e.g. chmod u+rwX) or "
                f"{elsewhere}, and {_rerun(args)}.")
    if name is None:
        return f"{reason} (OS error {exc.errno}); check the disk and the folders given, then {_rerun(args)}."
    return f"cannot use {name} ({reason}); check that path, then {_rerun(args)}."


def _database_message(exc: sqlite3.DatabaseError, args: argparse.Namespace) -> str:
    """SQLite errors carry no file name: the manifest is the workspace's ``manifest.sqlite``."""
    workspace = getattr(args, "workspace", None)
    db = f"the manifest '{Path(workspace) / 'manifest.sqlite'}'" if workspace is not None else "the manifest"
    code = getattr(exc, "sqlite_errorname", None) or ""  # Python 3.11+, e.g. SQLITE_NOTADB, SQLITE_IOERR_WRITE
    text = str(exc)
    if workspace is not None:
        from ..workspace.health import disk_full_error, is_disk_full

        if is_disk_full(exc, Path(workspace)):  # a full disk reads like damage to SQLite: free space first
            return str(disk_full_error(Path(workspace), exc))
    if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text or "malformed" in text:
        return (f"{db} is damaged or not a SQLite database ({text}); restore it from a backup or recover what "
                "it holds (`sqlite3 manifest.sqlite .recover`), or start a new --workspace.")
    if code.startswith("SQLITE_FULL") or "is full" in text:
        return f"no space left on the device for {db} ({text}); free some space and {_rerun(args)}."
    if code.startswith("SQLITE_READONLY") or "readonly" in text:
        return (f"{db} cannot be written ({text}); make the workspace folder and its files writable for you, or "
                f"choose another --workspace, and {_rerun(args)}.")
    if code.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return (f"{db} cannot be opened ({text}); check that the workspace folder exists and that you can write "
                f"in it (SQLite keeps its -wal and -shm files there) or choose another --workspace, then "
                f"{_rerun(args)}.")
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return f"{db} is locked by another process ({text}); let it finish or stop it, then {_rerun(args)}."
    if code.startswith("SQLITE_IOERR") or "I/O error" in text:
        return f"a disk error stopped {db} ({text}); check the disk (space, health), then {_rerun(args)}."
    return f"{db} cannot be used ({text}); rerun with --verbose for the details."
