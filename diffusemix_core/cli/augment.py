"""The ``augment`` command: a class-per-folder training set augmented into a workspace (``bulk/runner.py``).

Its flags become one :class:`~diffusemix_core.bulk.options.AugmentOptions` in :func:`options_from_args`: a flag's
``dest`` is the name of the option's field (``--engine`` sets ``runner``, ``--address`` sets ``ray_address``), and
the generation flags make its ``settings``. A new option is a field there and a flag here, nothing else.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from pathlib import Path

from ..engine.test_models import UNTRAINED_NOTE, is_test_model
from .args import (
    add_library_arguments,
    add_model_arguments,
    add_scorer_arguments,
    add_workspace_argument,
    fractal_library_from_args,
    prompt_library_from_args,
    settings_from_args,
    whole_number,
)
from .console import EXIT_ERROR, install_sigint, print_run_scores

__all__ = ["add_subcommand", "options_from_args", "run_augment_command"]

_positive_int = whole_number(1)


def add_subcommand(subparsers) -> None:
    """Register ``augment`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "augment",
        help="augment a class-per-folder training set into a workspace (resumable)",
        description=(
            "Make --per-image DiffuseMix augmentations of every image of TRAIN_DIR/<class>/<image> and record "
            "them in the workspace's manifest.sqlite. Re-running the same command after a crash or Ctrl-C finishes "
            "the job without redoing anything; a larger --per-image adds only the missing augmentations. "
            "Unreadable images are recorded as failed and reported at the end; the exit status is 0 when at "
            "least one image is usable. Before anything is made it prints a cost estimate (sources, augmentations "
            "to make, UNet evaluations per augmentation, the time from one calibration batch); --estimate-only "
            "stops there."
        ),
        epilog="example: python -m diffusemix_core augment --train-dir data/train --workspace ws --per-image 3 "
               "--model tiny-random --resolution 64 --steps 2",
    )
    p.add_argument("--train-dir", type=Path, required=True,
                   help="training set: one folder per class (the folder name is the label), images inside; "
                        "hidden and non-image files are ignored")
    add_workspace_argument(p, must_exist=False)
    p.add_argument("--per-image", type=_positive_int, default=1,
                   help="augmentations per image, each with its own prompt, mask, fractal and seed drawn from "
                        "--seed (default 1)")
    p.add_argument("--all-prompts", action="store_true",
                   help="instead of --per-image, one augmentation per enabled prompt per image (as the authors' "
                        "code does)")
    p.add_argument("--lam", type=float, default=0.2, help="fractal blend factor λ in [0, 1] (default 0.2)")
    p.add_argument("--feather", type=int, default=0,
                   help="pixels of linear ramp across the mask's seam (default 0; the authors' code uses 20)")
    p.add_argument("--batch-size", type=_batch_size, default=4,
                   help="images per batch: decoded, generated, mixed and committed together; also the model's "
                        "batch size (default 4); 'auto': the largest that fits in the GPU's free memory, measured "
                        "once and cached (4 on a CPU)")
    p.add_argument("--seed", type=int, default=0,
                   help="run seed: every choice is drawn from (seed, image content, slot), so the same command "
                        "gives the same manifest (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in logs)")
    p.add_argument("--estimate-only", action="store_true",
                   help="print the cost estimate (sources, augmentations to make, UNet evaluations per "
                        "augmentation, time from one calibration batch) and stop: nothing is written (every run "
                        "prints it before it starts)")
    add_library_arguments(p)
    add_model_arguments(p)
    _add_runner_arguments(p)
    add_scorer_arguments(p)
    p.set_defaults(func=run_augment_command)


def _batch_size(text: str) -> int | str:
    return "auto" if text.strip().lower() == "auto" else _positive_int(text)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the stages run: in this process (local) or on a Ray cluster (docs/cluster.md)."""
    g = parser.add_argument_group("engine")
    g.add_argument("--engine", dest="runner", choices=["local", "ray"], default="local",  # options.RUNNERS
                   help="local (default): every stage in this process; ray: load, generate and compose on a Ray "
                        "cluster, planning and the manifest here (needs `pip install -r requirements-ray.txt`)")
    g.add_argument("--address", dest="ray_address", metavar="ADDRESS", default=None,
                   help="with --engine ray: the cluster this machine is a node of, auto or HOST:PORT (default: "
                        "RAY_ADDRESS, a cluster started here with `ray start`, else a new local one)")
    g.add_argument("--workers", type=_positive_int, default=None,
                   help="with --engine ray: generate workers, one model each (default: as many as the cluster's "
                        "GPUs allow, else 1)")
    g.add_argument("--gpus-per-worker", type=_non_negative_float, default=None,
                   help="with --engine ray: GPUs per worker; a fraction shares a GPU (default 1 when the cluster has "
                        "GPUs, else 0)")
    g.add_argument("--cpus-per-worker", type=_non_negative_float, default=None,
                   help="with --engine ray: CPUs reserved per worker (default 1, or the fraction that leaves the "
                        "load and compose tasks a CPU)")
    g.add_argument("--stall-timeout", type=_non_negative_float, default=None, metavar="SECONDS",
                   help="with --engine ray: stop (resumably) when no batch comes back from the cluster for this long "
                        "while some are out, saying what Ray reports as waiting and free (default 900; 0: wait forever)")


def options_from_args(args: argparse.Namespace):
    """The run's :class:`~diffusemix_core.bulk.options.AugmentOptions` from the parsed flags (BadArgumentError for
    a value out of range)."""
    from ..bulk.options import AugmentOptions, MixOptions

    return AugmentOptions(settings=settings_from_args(args), mix=MixOptions(**_named(MixOptions, args)),
                          **_named(AugmentOptions, args))


def _named(options: type, args: argparse.Namespace) -> dict:
    """The flags whose dest names a field of `options` (a dataclass), by name; nested options are built apart."""
    nested = {"settings", "mix"}
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(options)
            if f.name not in nested and hasattr(args, f.name)}


def run_augment_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..bulk.estimate import estimate_run
    from ..bulk.runner import check_train_dir, run_augment
    from ..bulk.summary import describe_failures, describe_run
    from ..engine.pix2pix import Pix2PixGenerator
    from ..workspace.folder import Workspace
    from ..workspace.manifest import MANIFEST_NAME

    check_train_dir(args.train_dir)  # before anything is created
    options = options_from_args(args)
    if options.runner == "ray":
        from ..bulk.ray_runner import require_ray

        require_ray()  # a missing ray is told before anything is created
    fractals = fractal_library_from_args(args)
    # an estimate alone creates no workspace: one that does not exist yet has every augmentation still to make
    exists = (Path(args.workspace) / MANIFEST_NAME).exists()
    workspace = Workspace(args.workspace) if exists or not args.estimate_only else None
    library = prompt_library_from_args(args, fallback=workspace.manifest.get_prompt_library() if workspace else None)
    generator = None if options.runner == "ray" else Pix2PixGenerator(options.settings)  # the estimate's and run's
    estimate = estimate_run(args.train_dir, options, workspace=workspace, prompts=library, fractals=fractals,
                            generator=generator, preset=args.preset)
    print(estimate.format(), flush=True)
    if args.estimate_only:
        print("--estimate-only: nothing was made; run the same command without it to start.")
        return 0
    bars: list = []

    def progress(report) -> None:
        if not bars:  # created on the first report, so early errors print nothing but themselves
            bars.append(tqdm(total=report.total, unit="aug", desc="augment", disable=args.no_progress,
                             dynamic_ncols=True))
        bar = bars[0]
        bar.total = report.total
        bar.update(report.done - bar.n)

    def waiting(holder: str) -> None:
        print(f"waiting: workspace '{args.workspace}' is in use by {holder}; this run starts when it ends "
              "(Ctrl-C to give up).", file=sys.stderr)

    cancel = threading.Event()
    previous = install_sigint(cancel)
    try:
        summary = run_augment(workspace, args.train_dir, options, prompts=library, fractals=fractals,
                              generator=generator, progress=progress, cancel=cancel, on_wait=waiting)
    finally:
        for bar in bars:
            bar.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    print(f"{describe_run(summary)} -> {workspace.db_path}")
    for line in describe_failures(summary):
        print(f"  failed: {line}")
    for path, reason in summary.ignored:
        print(f"  skipped: {path}: {reason}")
    for note in summary.label_notes:
        print(f"note: {note}")
    print_run_scores(summary, args)
    if is_test_model(options.settings.model):
        print(f"note: {options.settings.model} is an {UNTRAINED_NOTE}.")
    if summary.cancelled:
        print("stopped early: re-run the same command to finish the job.", file=sys.stderr)
        return 130
    if summary.images_ok == 0:
        print(f"error: none of the {summary.images_total} images in '{args.train_dir}' could be read; "
              "see the reasons above and fix or remove those files.", file=sys.stderr)
        return EXIT_ERROR
    return 0
