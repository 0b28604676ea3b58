"""CPU time per stage of a bulk run: wrappers that add the time a function or an iterator takes to a clock.

The clock is a plain ``{stage name: CPU seconds}`` dict (``RunSummary.stage_cpu_seconds``). Per-thread CPU time
(``time.thread_time``) is measured, so a stage that runs in a pool of threads counts in full. The local runner
(``runner.py``) and the Ray runner (``ray_runner.py``) both time their planning with :func:`timed_iter`.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

__all__ = ["timed", "timed_iter"]


def timed(clock: dict[str, float], name: str, fn: Callable) -> Callable:
    """`fn`, adding the CPU time of the calling thread it takes to ``clock[name]`` (any thread)."""
    lock = threading.Lock()

    def timed_fn(*args):
        started = time.thread_time()
        try:
            return fn(*args)
        finally:
            spent = time.thread_time() - started
            with lock:
                clock[name] = clock.get(name, 0.0) + spent

    return timed_fn


def timed_iter(clock: dict[str, float], name: str, items: Iterator) -> Iterator:
    """The items of `items`, adding the CPU time spent producing them to ``clock[name]``.

    Closing this iterator closes `items` at once, in the closing thread: a generator that holds a resource of its
    thread (the planner's SQLite connection) is then never finalised later in another thread.
    """
    try:
        while True:
            started = time.thread_time()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                clock[name] = clock.get(name, 0.0) + time.thread_time() - started
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
