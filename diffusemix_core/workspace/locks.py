"""The workspace's advisory locks (``filelock``: flock on POSIX, the Windows lock elsewhere).

* ``W/.lock``, the run lock (:func:`run_lock`): held by a bulk run (and by ``check --restore``) for its whole length,
  so a second run on the same workspace waits for the first, saying who holds it (:func:`lock_holder`: the holder
  writes its pid, host, what and since into the lock file). Decisions and app saves do not take it: SQLite
  serialises their transactions.
* ``W/.init-lock`` (:func:`init_lock`): creating or migrating the schema, one process at a time (switching the
  manifest to WAL needs the file to itself).

Both are advisory and released by the operating system when their holder dies, so a killed run never leaves the
workspace locked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from ..errors import WorkspaceError

__all__ = ["INIT_LOCK_NAME", "LOCK_NAME", "init_lock", "lock_holder", "run_lock"]

LOCK_NAME = ".lock"
INIT_LOCK_NAME = ".init-lock"


@contextlib.contextmanager
def init_lock(root: Path) -> Iterator[None]:
    """Hold ``W/.init-lock`` (waiting for another holder)."""
    with FileLock(Path(root) / INIT_LOCK_NAME):
        yield


@contextlib.contextmanager
def run_lock(root: Path, what: str, *, wait: bool = True,
             on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the run lock of the workspace at `root`; a second holder waits (or fails when not `wait`).

    `on_wait(holder)` is called once with the holder's description (pid, host, what, since) before waiting.
    """
    root = Path(root)
    held: list[int] = []

    def describe(fd: int) -> None:  # called with the lock's descriptor once it is ours
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                           "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        held.append(fd)
        with contextlib.suppress(OSError):  # who holds it is told on a best-effort basis (a full disk says no)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, info.encode())

    lock = FileLock(root / LOCK_NAME, on_acquired=describe)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = lock_holder(root) or "another process"
        if not wait:
            raise WorkspaceError(f"workspace '{root}' is busy: {holder} holds it; wait for it to finish or stop "
                                 "it, then run again.") from None
        if on_wait is not None:
            on_wait(holder)
        lock.acquire()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(held[0], 0)  # nobody holds it now
        lock.release()


def lock_holder(root: Path) -> str | None:
    """Who holds the run lock, in words (from the lock file), or None when nobody has written it."""
    try:
        info = json.loads((Path(root) / LOCK_NAME).read_text() or "null")
    except (OSError, ValueError):
        return None
    if not info:
        return None
    return f"{info.get('what', 'a run')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"
