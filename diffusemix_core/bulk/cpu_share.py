"""Sharing the CPU between bulk runs on one machine, so two runs do not each take every core.

A run that computes on the CPU registers itself with :class:`CpuShare` (a lock file it holds, ``filelock``, in a
machine-wide folder, ``$TMPDIR/diffusemix-cpu-<uid>``); the number of held registrations is the number of runs
sharing the cores.
Each run then gives torch ``cores // runs`` threads (one fewer when its own pipeline threads need a core), and
looks again before each model step, in the thread that runs the model (torch's count is per thread), so a run that
starts or ends is noticed. A killed run's file is no longer locked (the operating system released it) and is
removed by a later count. What a run
gave torch is recorded (:meth:`CpuShare.describe`, the ``cpu_share`` entry of ``runs.args``).

On the CPU the last bits of Î can depend on torch's thread count (how reductions are split), so a run's share is
fixed by the number of runs, not by how its stages are scheduled; a workspace stays consistent whatever the share,
because a resumed run reuses the Î already stored. Without this sharing: two runs on a 2-core machine each set 2 threads and both ran
about 10x slower than one alone (OpenMP threads spinning against each other).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

__all__ = ["CpuShare"]

log = logging.getLogger(__name__)

STALE_AFTER = 30.0  # seconds: an unheld registration older than this is a dead run's (a new one is held at once)


# registrations held by this process: filelock's locks are re-entrant within a process, so a probe would take them
_HELD: set[str] = set()


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
        self._registration: FileLock | None = None
        self._previous: int | None = None
        self.threads: int | None = None
        self._used: list[tuple[int, int]] = []  # (runs, threads), each pair once, in the order first applied
        self._lock = threading.Lock()

    def __enter__(self) -> "CpuShare":
        import torch

        self._previous = torch.get_num_threads()
        path = _folder() / f"run-{os.getpid()}-{secrets.token_hex(4)}.lock"
        self._registration = FileLock(path, thread_local=False)  # released by the OS if this process dies
        self._registration.acquire()
        _HELD.add(str(path))
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self._registration is not None:
            _HELD.discard(str(self._registration.lock_file))
            self._registration.release()
            with contextlib.suppress(FileNotFoundError):
                Path(self._registration.lock_file).unlink()
        if self._previous is not None:
            torch.set_num_threads(self._previous)

    @staticmethod
    def active_runs() -> int:
        """Runs registered right now (at least 1: this one); files of dead runs are removed on the way."""
        count = 0
        for path in _folder().glob("run-*.lock"):
            if str(path) in _HELD:
                count += 1  # a run of this process
                continue
            probe = FileLock(path, timeout=0, thread_local=False)
            try:
                probe.acquire()
            except Timeout:
                count += 1  # held by a live run (this one's own registration included)
                continue
            except FileNotFoundError:
                continue
            try:  # nobody holds it: its run is gone (a fresh file may be one being registered: left alone)
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - path.stat().st_mtime > STALE_AFTER:
                        path.unlink()
            finally:
                probe.release()
        return max(count, 1)

    def apply(self) -> int:
        """Set torch's thread count, in the calling thread, to this run's share of the cores; returns it.

        torch keeps the count per thread once a thread has computed (OpenMP), so a count set in one thread does not
        reach a thread that is already working: apply it in the thread that runs the model (:meth:`bind`). Threads
        started afterwards begin with the count set last.
        """
        import torch

        runs = self.active_runs()
        threads = max(1, self.cores // runs - self.reserve)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        with self._lock:
            if self.threads is not None and threads != self.threads:
                log.info("CPU shared by %d run(s) now: torch uses %d thread(s)", runs, threads)
            self.threads = threads
            if (runs, threads) not in self._used:
                self._used.append((runs, threads))
        return threads

    def bind(self, fn: Callable) -> Callable:
        """`fn`, applying the share in the calling thread first: wrap the model's step with it."""

        @functools.wraps(fn)
        def bound(*args, **kwargs):
            self.apply()
            return fn(*args, **kwargs)

        return bound

    def describe(self) -> dict:
        """What this run gave torch, for the record (``runs.args``): cores, reserve, and every (runs, threads)."""
        with self._lock:
            used = [{"runs": runs, "threads": threads} for runs, threads in self._used]
        return {"cores": self.cores, "reserve": self.reserve, "used": used}
