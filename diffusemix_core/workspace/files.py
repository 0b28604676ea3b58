"""Writing files safely: atomic writes, temp files that name their writer, and names that stay in their folder.

* :func:`atomic_write` / :func:`atomic_target`: a file appears under its final name complete or not at all (a temp
  file in the same folder, optionally fsynced, then ``os.replace``). Temp names are ``.tmp-<pid>-<random><suffix>``,
  so :func:`remove_dead_temp_files` can delete the leftovers of a killed writer, and only those.
* :func:`safe_join`: a joined path is refused if it would leave its root (``..``, separators, links);
  :func:`links_outside` finds the links under a folder that lead out of a root. (How a class label becomes a safe
  folder name is ``labels.py``.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import stat
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import WorkspaceError

__all__ = [
    "TMP_PREFIX",
    "atomic_target",
    "atomic_write",
    "dead_temp_files",
    "links_outside",
    "pid_alive",
    "remove_dead_temp_files",
    "safe_join",
    "temp_path",
    "writer_pid",
]

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
# a temp name, optionally with SQLite's side files of a temp database (a backup being written): -journal, -wal, -shm
_TEMP_NAME = re.compile(rf"^{re.escape(TMP_PREFIX)}([0-9]+)-[0-9a-f]+(\.[A-Za-z0-9]+)?(-journal|-wal|-shm)?$")


# ------------------------------------------------------------------------------------------- temp files, atomic
def temp_path(target: Path) -> Path:
    """A fresh temp file name beside `target` that records this process as its writer."""
    return target.parent / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}{target.suffix}"


def writer_pid(name: str) -> int | None:
    """The pid recorded in a temp file name, or None if `name` is not one of ours (``.tmp-<pid>-<hex><suffix>``,
    or SQLite's ``-journal``, ``-wal`` or ``-shm`` of such a file)."""
    match = _TEMP_NAME.match(name)
    return int(match.group(1)) if match else None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_target(target: Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path to write; on success it is fsynced (if `durable`) and renamed to `target`, else removed."""
    tmp = temp_path(target)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(target: Path, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to `target` through a temp file in the same folder and ``os.replace``."""
    tmp = temp_path(target)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def dead_temp_files(paths: Iterable[Path], *, folders: bool = False) -> list[Path]:
    """Those of `paths` that are temp files of ours (named by :func:`temp_path`, plain files) whose writer is no
    longer running. Anything else, such as another program's ``.tmp-notes`` or a folder, is never one of them.

    With `folders`, temp folders of ours (an export being written: ``.tmp-<pid>-<hex>``) are the ones looked for.
    """
    dead = []
    for path in paths:
        pid = writer_pid(path.name)
        if pid is None or pid <= 0 or pid_alive(pid):
            continue
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode) if folders else stat.S_ISREG(mode):
            dead.append(path)
    return dead


def remove_dead_temp_files(paths: Iterable[Path]) -> int:
    """Delete those of `paths` that are temp files of a writer that is no longer running; returns the count."""
    removed = 0
    for path in dead_temp_files(paths):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    if removed:
        log.info("removed %d temp file(s) left by an interrupted writer", removed)
    return removed


# ------------------------------------------------------------------------------------------- paths
def links_outside(folder: str | Path, root: str | Path) -> list[Path]:
    """The symbolic links under `folder` (walked without following them) that resolve outside `root`, sorted.

    A folder that is inside `root` by its own path can still reach elsewhere through links it holds (a class folder
    linked to ``/usr/share``); reading it as a dataset follows them, so a caller confined to `root` refuses these.
    """
    root_resolved = Path(root).resolve()
    escaping = []
    for dirpath, dirnames, filenames in os.walk(folder):  # os.walk does not descend into linked folders
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path.is_symlink():
                target = path.resolve()
                if target != root_resolved and root_resolved not in target.parents:
                    escaping.append(path)
    return sorted(escaping)


def safe_join(root: str | Path, *parts: str) -> Path:
    """``root / part1 / part2 …``, refusing any part that is not one plain name or a result outside `root`."""
    root_resolved = Path(root).resolve()
    for part in parts:
        if (
            not part
            or part in (".", "..")
            or "/" in part
            or "\\" in part
            or "\x00" in part
            or any(unicodedata.category(ch) == "Cc" for ch in part)
        ):
            raise WorkspaceError(
                f"refusing to write {part!r} under '{root}': not a plain file or folder name; sanitise it first."
            )
    target = root_resolved.joinpath(*parts)
    resolved = target.resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise WorkspaceError(f"refusing to write '{resolved}': it is outside the export folder '{root_resolved}'.")
    return target
