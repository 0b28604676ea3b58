"""Run a chain of stages concurrently: one thread per stage, bounded queues between them, order kept.

``run_stages(items, [f1, f2, f3])`` gives ``f3(f2(f1(item)))`` for every item, in order, while f1 works on item
k+2, f2 on item k+1 and f3 on item k. Each queue holds at most `depth` items, so memory stays bounded whatever the
number of items. The first exception in any stage stops every stage and is raised in the caller's thread.
The items are taken, and a generator of them is closed, in one thread of their own: a generator that holds a
resource of the thread it runs in (a SQLite connection) is never finalised in another one.
Nothing here knows about images: the bulk run (``runner.py``) passes its stage functions.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator, Sequence

__all__ = ["run_stages"]

_DONE = object()


class _Stopped(Exception):
    """Another stage failed: this one stops quietly."""


def run_stages(items: Iterable[Any], stages: Sequence[Callable[[Any], Any]], *, depth: int = 1,
               names: Sequence[str] | None = None) -> Iterator[Any]:
    """Yield the result of every stage chain on every item, in order (see the module docstring)."""
    stop = threading.Event()
    errors: list[BaseException] = []
    queues = [queue.Queue(maxsize=depth) for _ in range(len(stages) + 1)]

    def put(q: queue.Queue, value: Any) -> None:
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                q.put(value, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(q: queue.Queue) -> Any:
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue

    def feed() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                put(queues[0], item)
            put(queues[0], _DONE)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            stop.set()
        finally:
            _close(iterator)

    def work(index: int, fn: Callable[[Any], Any]) -> None:
        try:
            while True:
                item = get(queues[index])
                if item is _DONE:
                    put(queues[index + 1], _DONE)
                    return
                put(queues[index + 1], fn(item))
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            stop.set()

    names = list(names or [getattr(fn, "__name__", f"stage{i}") for i, fn in enumerate(stages)])
    threads = [threading.Thread(target=feed, name="stage-feed", daemon=True)]
    threads += [threading.Thread(target=work, args=(i, fn), name=f"stage-{names[i]}", daemon=True)
                for i, fn in enumerate(stages)]
    for thread in threads:
        thread.start()
    try:
        while True:
            try:
                item = get(queues[-1])
            except _Stopped:
                break
            if item is _DONE:
                break
            yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


def _close(iterator: Iterator[Any]) -> None:
    """Close a generator now, in this thread (an iterator without ``close`` is left as it is)."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
