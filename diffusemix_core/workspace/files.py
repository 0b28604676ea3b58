"""Writing files safely: atomic writes, temp files that name their writer, and names that stay in their folder.

* :func:`atomic_write` / :func:`atomic_target`: a file appears under its final name complete or not at all (a temp
  file in the same folder, optionally fsynced, then ``os.replace``). Temp names are ``.tmp-<pid>-<random><suffix>``,
  so :func:`remove_dead_temp_files` can delete the leftovers of a killed writer, and only those.
* :func:`sanitize_label`, :func:`label_folders`, :func:`safe_join`: a class label (any Unicode text) becomes one safe
  folder name, and a joined path is refused if it would leave its root (``..``, separators, links);
  :func:`links_outside` finds the links under a folder that lead out of a root.
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
    "UNLABELLED",
    "atomic_target",
    "atomic_write",
    "dead_temp_files",
    "label_folders",
    "links_outside",
    "pid_alive",
    "remove_dead_temp_files",
    "safe_join",
    "sanitize_label",
    "temp_path",
    "writer_pid",
]

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
UNLABELLED = "unlabelled"
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_FORBIDDEN_CHARS = set('/\\<>:"|?*')
_MAX_NAME_BYTES = 180
_TEMP_NAME = re.compile(rf"^{re.escape(TMP_PREFIX)}([0-9]+)-[0-9a-f]+(\.[A-Za-z0-9]+)?$")


# ------------------------------------------------------------------------------------------- temp files, atomic
def temp_path(target: Path) -> Path:
    """A fresh temp file name beside `target` that records this process as its writer."""
    return target.parent / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}{target.suffix}"


def writer_pid(name: str) -> int | None:
    """The pid recorded in a temp file name, or None if `name` is not one of ours (``.tmp-<pid>-<hex><suffix>``)."""
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


def dead_temp_files(paths: Iterable[Path]) -> list[Path]:
    """Those of `paths` that are temp files of ours (named by :func:`temp_path`, plain files) whose writer is no
    longer running. Anything else, such as another program's ``.tmp-notes`` or a folder, is never one of them."""
    dead = []
    for path in paths:
        pid = writer_pid(path.name)
        if pid is None or pid <= 0 or pid_alive(pid):
            continue
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                continue
        except FileNotFoundError:
            continue
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


# ------------------------------------------------------------------------------------------- names and paths
def sanitize_label(label: str | None) -> str:
    """A single safe folder name for `label`: keeps Unicode letters and spaces, drops what a filesystem forbids.

    Path separators, NUL, control characters and ``<>:"|?*`` become ``_``; leading/trailing dots and spaces are
    stripped (no hidden folders, no ``..``); Windows reserved names get a ``_`` prefix; the result is cut to
    180 UTF-8 bytes and is never empty.
    """
    text = unicodedata.normalize("NFC", UNLABELLED if label is None else str(label))
    chars = []
    for ch in text:
        if ch in _FORBIDDEN_CHARS or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            chars.append("_")
        else:
            chars.append(ch)
    name = "".join(chars).strip(" .")
    if not name or set(name) <= {"_", "."}:
        name = "_" + name if name else "_"
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    encoded = name.encode("utf-8")
    if len(encoded) > _MAX_NAME_BYTES:
        name = encoded[:_MAX_NAME_BYTES].decode("utf-8", errors="ignore").rstrip(" .") or "_"
    return name


def label_folders(labels: Iterable[str]) -> dict[str, str]:
    """Map each label to a sanitised folder name, unique case-insensitively (case-insensitive filesystems)."""
    taken: set[str] = set()
    out: dict[str, str] = {}
    for label in sorted(set(labels)):
        base = sanitize_label(label)
        name, n = base, 2
        while name.casefold() in taken:
            name = f"{base}_{n}"
            n += 1
        taken.add(name.casefold())
        out[label] = name
    return out


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
