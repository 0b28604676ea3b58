"""Command line: ``python -m diffusemix_core <command>``.

``preview`` writes the six stages of one augmentation; ``augment``, ``status``, ``review`` and ``export`` work on a
workspace (see ``cli_workspace.py``). Errors of the project's types are printed in one line (``--verbose`` for the
traceback) and give a non-zero exit status.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Sequence

from ..errors import DiffuseMixError

log = logging.getLogger("diffusemix_core")

EXIT_ERROR = 1
EXIT_USAGE = 2


def whole_number(minimum: int = 1):
    """An argparse type: a whole number >= `minimum`, or a usage error that says so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The generation flags shared by every command that runs the model."""
    from ..engine.generation import DEFAULT_MODEL, GenerationSettings

    d = GenerationSettings()
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"diffusers InstructPix2Pix model id or local folder (default {DEFAULT_MODEL}); "
                        "'tiny-random' is an untrained miniature for tests and offline demos")
    g.add_argument("--steps", type=int, default=d.steps,
                   help=f"denoising steps (default {d.steps}; the authors' code uses 100)")
    g.add_argument("--guidance-scale", type=float, default=d.guidance_scale,
                   help=f"text guidance scale (default {d.guidance_scale})")
    g.add_argument("--image-guidance-scale", type=float, default=d.image_guidance_scale,
                   help=f"image guidance scale (default {d.image_guidance_scale})")
    g.add_argument("--resolution", type=int, default=d.resolution,
                   help=f"working resolution of the long side, a multiple of 8 (default {d.resolution}); "
                        "the aspect ratio is kept and Î is resized back to the source's size")
    g.add_argument("--device", default=d.device, help="cpu, cuda, cuda:1, ... (default auto: cuda when available)")
    g.add_argument("--dtype", default=d.dtype, choices=["auto", "float32", "float16", "bfloat16"],
                   help="model precision (default auto: float16 on GPU, float32 on CPU)")
    g.add_argument("--revision", default=None, help="model revision (branch, tag or commit) for hub ids")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet (on a GPU: faster after the first batches of each size, which "
                        "compile; not for ZeroGPU Spaces)")


def settings_from_args(args: argparse.Namespace):
    from ..engine.generation import GenerationSettings

    return GenerationSettings(
        model=args.model, steps=args.steps, guidance_scale=args.guidance_scale,
        image_guidance_scale=args.image_guidance_scale, resolution=args.resolution,
        device=args.device, dtype=args.dtype, revision=args.revision, compile=args.compile,
    )


def add_library_arguments(parser: argparse.ArgumentParser) -> None:
    """Prompt and fractal library flags."""
    g = parser.add_argument_group("libraries")
    g.add_argument("--prompts", default=None,
                   help='comma-separated prompts that replace the library, e.g. "autumn,snowy"')
    g.add_argument("--prompt-file", type=Path, default=None,
                   help="a prompt library file (.json or .toml, the format of prompts/default.json)")
    g.add_argument("--fractal-dir", type=Path, default=None,
                   help="a folder of fractal images (default: the shipped procedural set in fractals/)")


def prompt_library_from_args(args: argparse.Namespace, fallback=None):
    """The library the flags ask for, else `fallback`, else the paper's default."""
    from ..engine.prompts import PromptLibrary

    if args.prompts and args.prompt_file:
        raise_usage("give --prompts or --prompt-file, not both")
    if args.prompt_file:
        return PromptLibrary.load(args.prompt_file)
    if args.prompts:
        library = PromptLibrary.from_texts([p.strip() for p in args.prompts.split(",")])
        library.validate()
        return library
    return fallback if fallback is not None else PromptLibrary.default()


def fractal_library_from_args(args: argparse.Namespace):
    from ..engine.fractals import FractalLibrary

    return FractalLibrary.from_folder(args.fractal_dir) if args.fractal_dir else FractalLibrary.default()


def raise_usage(message: str) -> None:
    from ..errors import BadArgumentError

    raise BadArgumentError(message)


# preview -------------------------------------------------------------------------------------------------
def add_preview(subparsers) -> None:
    p = subparsers.add_parser(
        "preview",
        help="augment one image and write its six stages as PNG files plus choices.json",
        description="Augment IMAGE once and write original.png, generated.png, mask.png, hybrid.png, "
                    "fractal.png, final.png and choices.json into --out.",
    )
    p.add_argument("image", type=Path, help="the source image I")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--prompt", default=None, help="prompt, e.g. 'autumn' (default: drawn from the library)")
    p.add_argument("--mask", default=None, help="mask kind: left, right, top, bottom or box (default: drawn)")
    p.add_argument("--fractal", default=None, help="fractal id in the library, e.g. a file name (default: drawn)")
    p.add_argument("--lam", type=float, default=0.2, help="fractal blend factor λ in [0, 1] (default 0.2)")
    p.add_argument("--feather", type=int, default=0,
                   help="pixels of linear ramp across the mask's seam (default 0; the authors' code uses 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice and of the generation")
    add_library_arguments(p)
    add_model_arguments(p)
    p.set_defaults(func=run_preview)


def run_preview(args: argparse.Namespace) -> int:
    from ..engine.diffusemix import DiffuseMix
    from ..engine.images import save_png

    dm = DiffuseMix(
        prompts=prompt_library_from_args(args),
        fractals=fractal_library_from_args(args),
        lam=args.lam,
        feather=args.feather,
        settings=settings_from_args(args),
    )
    record = dm.augment(args.image, prompt=args.prompt, mask=args.mask, fractal=args.fractal, seed=args.seed,
                        source=str(args.image))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, array in record.stages().items():
        save_png(array, args.out / f"{name}.png")
    (args.out / "choices.json").write_text(json.dumps(record.choices(), indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    print(f"wrote 6 stages and choices.json to {args.out}: prompt={record.prompt!r} mask={record.mask_kind} "
          f"fractal={record.fractal_id} lam={record.lam} seed={record.requested_seed}")
    if record.is_test_model:
        from ..engine.test_models import UNTRAINED_NOTE

        print(f"note: {record.model} is an {UNTRAINED_NOTE}.")
    return 0


# main ----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from . import augment as cli_augment
    from . import train as cli_train
    from . import workspace as cli_workspace

    parser = argparse.ArgumentParser(
        prog="python -m diffusemix_core",
        description="DiffuseMix Studio: label-preserving diffusion augmentation (DiffuseMix, CVPR 2024).",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log details and show tracebacks")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_preview(subparsers)
    cli_augment.add_subcommand(subparsers)
    cli_workspace.add_subcommands(subparsers)
    cli_train.add_subcommand(subparsers)
    from .curation import add_subcommands as add_curation; add_curation(subparsers)  # noqa: E702
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
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        print(f"error: {_failure_message(exc, args)}", file=sys.stderr)
        return EXIT_ERROR


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`


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


def _failure_message(exc: Exception, args: argparse.Namespace) -> str:
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
