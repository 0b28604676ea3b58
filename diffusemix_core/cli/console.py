"""What the commands share while they run: their exit statuses, a Ctrl-C that finishes the current batch, and the
lines several commands print about the scorer a run used."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "install_sigint", "print_run_scores",
           "scorer_note"]

EXIT_ERROR = 1
EXIT_USAGE = 2  # a bad command line (argparse's status)
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`


def install_sigint(cancel: threading.Event):
    """First Ctrl-C: set `cancel` (finish the current batch and stop cleanly); second: interrupt at once.

    Returns the previous handler, to put back with ``signal.signal(signal.SIGINT, previous)``; None (and nothing
    installed) outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\nstopping after the current batch (Ctrl-C again to stop now)...", file=sys.stderr)

    return signal.signal(signal.SIGINT, handler)


def scorer_note(model: str | None, is_test_model: bool) -> None:
    """The warning under any output that shows an untrained test scorer's numbers."""
    from ..engine.test_models import UNTRAINED_SCORER_NOTE

    if is_test_model:
        print(f"note: {model} is an {UNTRAINED_SCORER_NOTE}.")


def print_run_scores(summary, args: argparse.Namespace) -> None:
    """After ``augment``: which scores the run stored (and the untrained-scorer note)."""
    from ..engine.test_models import is_test_model

    if getattr(args, "scorer", "none") == "none":
        return
    if summary.scorer is None:
        print(f"scores: quality flags only (label scores skipped, see the warning); add them with "
              f"`python -m diffusemix_core score --workspace {args.workspace}`")
        return
    print(f"scores: label consistency by {summary.scorer} and quality flags (see `report --workspace "
          f"{args.workspace}`)")
    scorer_note(summary.scorer, is_test_model(summary.scorer))
