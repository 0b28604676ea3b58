"""Sharing the CPU between bulk runs on one machine, so two runs do not each take every core.

A run that computes on the CPU registers itself with :class:`CpuShare` (a lock file held open in a machine-wide
folder, ``$TMPDIR/diffusemix-cpu-<uid>``); the number of live registrations is the number of runs sharing the cores.
Each run then gives torch ``cores // runs`` threads (one fewer when its own pipeline threads need a core), and
looks again between batches, so a run that starts or ends is noticed. A killed run's file is no longer locked and is
removed by the next count. Today's figure without it: two runs on a 2-core machine each set 2 threads and both ran
about 10x slower than one alone (OpenMP threads spinning against each other).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import tempfile
from pathlib import Path

__all__ = ["CpuShare"]

log = logging.getLogger(__name__)


def _folder() -> Path:
    folder = Path(tempfile.gettempdir()) / f"diffusemix-cpu-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


class CpuShare:
    """``with CpuShare(reserve=1) as share: share.apply()`` — set torch's threads to this run's share of the CPU."""

    def __init__(self, *, reserve: int = 0, cores: int | None = None) -> None:
        if cores is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.cores = cores
        self.reserve = reserve
        self._fd: int | None = None
        self._path: Path | None = None
        self._previous: int | None = None
        self.threads: int | None = None

    def __enter__(self) -> "CpuShare":
        import torch

        self._previous = torch.get_num_threads()
        self._path = _folder() / f"run-{os.getpid()}-{secrets.token_hex(4)}.lock"
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self._fd is not None:
            os.close(self._fd)
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
        if self._previous is not None:
            torch.set_num_threads(self._previous)

    @staticmethod
    def active_runs() -> int:
        """Runs registered right now (at least 1: this one); files of dead runs are removed on the way."""
        count = 0
        for path in _folder().glob("run-*.lock"):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    count += 1  # held by a live run
                continue
            else:  # nobody holds it: its run is gone
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            finally:
                os.close(fd)
        return max(count, 1)

    def apply(self) -> int:
        """Set torch's thread count to this run's share of the cores; returns it."""
        import torch

        threads = max(1, self.cores // self.active_runs() - self.reserve)
        if threads != self.threads:
            torch.set_num_threads(threads)
            if self.threads is not None:
                log.info("CPU shared by more or fewer runs now: torch uses %d thread(s)", threads)
            self.threads = threads
        return threads
