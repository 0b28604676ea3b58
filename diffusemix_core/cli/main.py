"""Command line: ``diffusemix <command>`` or ``python -m diffusemix_core <command>``.

The parser is built from the command modules (``preview.py``; ``augment.py``; ``workspace.py``: status, review, check,
export; ``train.py``; ``curation.py``: score, report; ``compare.py``:
compare-settings); :func:`main` runs one command. Errors are printed in one
line (``failures.py``; ``--verbose`` for the traceback) and give a non-zero exit status.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from . import augment, compare, curation, preview, prompts, train, workspace
from .console import EXIT_BROKEN_PIPE, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE
from .failures import failure_message

__all__ = ["build_parser", "main"]

CONSOLE_SCRIPT = "diffusemix"  # pyproject.toml's [project.scripts]


class _Parser(argparse.ArgumentParser):
    """A usage error is one line too, naming the argument and the value; the usage itself is one ``--help`` away.
    (The subcommands' parsers are of this class as well: argparse makes them of their parent's class.)"""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=CONSOLE_SCRIPT if os.path.basename(sys.argv[0]) == CONSOLE_SCRIPT else "python -m diffusemix_core",
        description="DiffuseMix Studio: label-preserving diffusion augmentation (DiffuseMix, CVPR 2024).",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log details and show tracebacks")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    preview.add_subcommand(subparsers)
    augment.add_subcommand(subparsers)
    workspace.add_subcommands(subparsers)
    train.add_subcommand(subparsers)
    curation.add_subcommands(subparsers)
    prompts.add_subcommand(subparsers)
    compare.add_subcommand(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status.

    Every failure is one line on stderr and a non-zero status, the traceback only with ``--verbose``: the
    project's errors, a damaged, locked or read-only manifest, a full disk, a read-only or forbidden folder, any
    other OS error (naming the file), and, as a last resort, anything unexpected. A closed stdout pipe
    (``status | head -1``) ends the command quietly with status 141, as a Unix tool killed by SIGPIPE.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" when the interpreter exits
        return status
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.verbose:
            raise
        print(f"error: {failure_message(exc, args)}", file=sys.stderr)
        return EXIT_ERROR


def _stdout_to_devnull() -> None:
    """Point stdout's descriptor at /dev/null so that the interpreter's last flush cannot fail again (the Python
    docs' note on SIGPIPE); a stdout without a descriptor (replaced in tests) is left alone."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
