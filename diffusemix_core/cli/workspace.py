"""Workspace subcommands of ``python -m diffusemix_core``: ``augment``, ``status``, ``review``, ``export``.

Each handler takes the argparse namespace and returns an exit status; errors of the project's types propagate to
``cli.main``, which prints them in one line (the traceback with ``--verbose``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from .curation import add_scorer_arguments, print_run_scores
from ..engine.test_models import UNTRAINED_NOTE, is_test_model
from .main import (
    EXIT_ERROR,
    add_library_arguments,
    add_model_arguments,
    fractal_library_from_args,
    prompt_library_from_args,
    settings_from_args,
    whole_number,
)

log = logging.getLogger(__name__)

__all__ = ["add_subcommands", "run_augment_command", "run_status", "run_review", "run_check", "run_export"]


_positive_int = whole_number(1)


def _ids(text: str) -> list[int]:
    """'3', '3,4,9' or '3-7' (inclusive) -> ids."""
    out: list[int] = []
    try:
        for part in text.replace(" ", ",").split(","):
            if not part:
                continue
            if "-" in part.strip("-"):
                low, high = part.split("-", 1)
                out.extend(range(int(low), int(high) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ids like 3, 3,4,9 or 3-7, got {text!r}") from None
    return out


def _workspace_argument(parser: argparse.ArgumentParser, *, must_exist: bool) -> None:
    parser.add_argument("--workspace", "-w", type=Path, required=True,
                        help="workspace folder (manifest.sqlite + images/)"
                             + ("" if must_exist else "; created if missing"))
    parser.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help="log details and show tracebacks (same as the global --verbose)")


def add_subcommands(subparsers) -> None:
    """Register augment, status, review, check and export on the main parser's subparsers."""
    _add_augment(subparsers)
    _add_status(subparsers)
    _add_review(subparsers)
    _add_check(subparsers)
    _add_export(subparsers)


# augment ---------------------------------------------------------------------------------------------------
def _add_augment(subparsers) -> None:
    p = subparsers.add_parser(
        "augment",
        help="augment a class-per-folder training set into a workspace (resumable)",
        description=(
            "Make --per-image DiffuseMix augmentations of every image of TRAIN_DIR/<class>/<image> and record "
            "them in the workspace's manifest.sqlite. Re-running the same command after a crash or Ctrl-C finishes "
            "the job without redoing anything; a larger --per-image adds only the missing augmentations. "
            "Unreadable images are recorded as failed and reported at the end; the exit status is 0 when at "
            "least one image is usable."
        ),
        epilog="example: python -m diffusemix_core augment --train-dir data/train --workspace ws --per-image 3 "
               "--model tiny-random --resolution 64 --steps 2",
    )
    p.add_argument("--train-dir", type=Path, required=True,
                   help="training set: one folder per class (the folder name is the label), images inside; "
                        "hidden and non-image files are ignored")
    _workspace_argument(p, must_exist=False)
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
    add_library_arguments(p)
    add_model_arguments(p)
    _add_engine_arguments(p)
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


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the stages run: in this process (local) or on a Ray cluster (docs/cluster.md)."""
    g = parser.add_argument_group("engine")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (default): every stage in this process; ray: load, generate and compose on a Ray "
                        "cluster, planning and the manifest here (needs `pip install -r requirements-ray.txt`)")
    g.add_argument("--address", default=None,
                   help="with --engine ray: the cluster this machine is a node of, auto or HOST:PORT (default: "
                        "RAY_ADDRESS, a cluster started here with `ray start`, else a new local one)")
    g.add_argument("--workers", type=_positive_int, default=None,
                   help="with --engine ray: generate workers, one model each (default: as many as the cluster's "
                        "GPUs allow, else 1)")
    g.add_argument("--gpus-per-worker", type=_non_negative_float, default=None,
                   help="with --engine ray: GPUs per worker; a fraction shares a GPU (default 1 when the cluster has "
                        "GPUs, else 0)")
    g.add_argument("--cpus-per-worker", type=_non_negative_float, default=None,
                   help="with --engine ray: CPUs reserved per worker (default 1)")


def run_augment_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..bulk.runner import check_train_dir, run_augment
    from ..bulk.summary import describe_failures, describe_run
    from ..workspace.folder import Workspace

    check_train_dir(args.train_dir)  # before anything is created
    if args.engine == "ray":
        from ..bulk.ray_runner import require_ray

        require_ray()  # a missing ray is told before anything is created
    settings = settings_from_args(args)
    fractals = fractal_library_from_args(args)
    workspace = Workspace(args.workspace)
    library = prompt_library_from_args(args, fallback=workspace.manifest.get_prompt_library())
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
    previous = _install_sigint(cancel)
    try:
        summary = run_augment(
            workspace, args.train_dir, per_image=args.per_image, prompts=library, fractals=fractals, lam=args.lam,
            settings=settings, batch_size=args.batch_size, seed=args.seed, all_prompts=args.all_prompts,
            progress=progress, cancel=cancel, feather=args.feather, on_wait=waiting, engine=args.engine,
            ray_address=args.address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
            cpus_per_worker=args.cpus_per_worker, scorer=args.scorer, class_map=args.class_map,
        )
    finally:
        for bar in bars:
            bar.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    print(f"{describe_run(summary)} -> {workspace.db_path}")
    for line in describe_failures(summary):
        print(f"  failed: {line}")
    print_run_scores(summary, args)
    if is_test_model(settings.model):
        print(f"note: {settings.model} is an {UNTRAINED_NOTE}.")
    if summary.cancelled:
        print("stopped early: re-run the same command to finish the job.", file=sys.stderr)
        return 130
    if summary.images_ok == 0:
        print(f"error: none of the {summary.images_total} images in '{args.train_dir}' could be read; "
              "see the reasons above and fix or remove those files.", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _install_sigint(cancel: threading.Event):
    """First Ctrl-C: finish the current batch and stop cleanly; second: interrupt at once."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\nstopping after the current batch (Ctrl-C again to stop now)...", file=sys.stderr)

    return signal.signal(signal.SIGINT, handler)


# status ----------------------------------------------------------------------------------------------------
def _add_status(subparsers) -> None:
    p = subparsers.add_parser(
        "status",
        help="counts of a workspace by status, label and prompt; failed images with their reasons",
        description="Print what a workspace holds: augmentations by status, label and prompt, and every source "
                    "image that could not be read, with the reason.",
    )
    _workspace_argument(p, must_exist=True)
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of tables")
    p.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    from ..workspace.manifest import STATUSES
    from ..workspace.folder import Workspace

    summary = Workspace(args.workspace, create=False).manifest.summary()
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    print(f"workspace {args.workspace}: {summary['augmentations']} augmentations from "
          f"{summary['sources']['ok']} images ({summary['sources']['failed']} failed), "
          f"{summary['generations']} generated images, {summary['exports']} exports")
    print("  " + "  ".join(f"{s}: {summary['by_status'][s]}" for s in STATUSES))
    if summary["drift"]["mean"] is not None:
        print(f"  drift: mean {summary['drift']['mean']:.3f}, max {summary['drift']['max']:.3f}")
    if summary["by_label"]:
        print("by label:")
        width = max(len(str(label)) for label in summary["by_label"])
        for label, counts in summary["by_label"].items():
            print(f"  {str(label):<{width}}  " + "  ".join(f"{s} {counts[s]}" for s in STATUSES))
    if summary["by_prompt"]:
        print("by prompt:")
        for prompt, n in summary["by_prompt"].items():
            print(f"  {prompt}: {n}")
    if summary["failures"]:
        print("failed images:")
        for f in summary["failures"]:
            print(f"  {f['path']}: {f['error']}")
    return 0


# review ----------------------------------------------------------------------------------------------------
def _add_review(subparsers) -> None:
    p = subparsers.add_parser(
        "review",
        help="approve or reject augmentations in bulk by label, prompt, drift or id; rules (--auto); undo; history",
        description="Set the status of every augmentation that matches ALL the filters given; with no filter, "
                    "every augmentation. Every decision is recorded (the manifest's reviews table) and a bulk "
                    "decision is preceded by a backup of the manifest; --undo reverts the last bulk decision.",
        epilog="example: python -m diffusemix_core review -w ws --approve --max-drift 0.5; "
               "python -m diffusemix_core review -w ws --reject --prompt rainbow; "
               "python -m diffusemix_core review -w ws --undo; "
               "python -m diffusemix_core review -w ws --auto --min-label-prob 0.2 --reject-flagged --dry-run",
    )
    _workspace_argument(p, must_exist=True)
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--approve", dest="new_status", action="store_const", const="approved",
                        help="mark the matching augmentations approved")
    action.add_argument("--reject", dest="new_status", action="store_const", const="rejected",
                        help="mark the matching augmentations rejected")
    action.add_argument("--reset", dest="new_status", action="store_const", const="pending",
                        help="mark the matching augmentations pending again")
    action.add_argument("--undo", action="store_true",
                        help="revert the last bulk decision (items decided again since are left as they are)")
    action.add_argument("--history", type=int, metavar="ID", default=None,
                        help="print every decision on augmentation ID")
    from .curation import add_auto_review_arguments; add_auto_review_arguments(p, action)  # noqa: E702
    p.add_argument("--label", default=None, help="only this label (class folder name, exactly)")
    p.add_argument("--prompt", default=None, help="only this prompt (raw text, e.g. 'autumn')")
    p.add_argument("--max-drift", type=float, default=None,
                   help="only augmentations whose drift score (0 = Î like I, 1 = unrelated) is <= X; with --auto: "
                        "the rule 'reject when drift > X'")
    p.add_argument("--min-drift", type=float, default=None, help="only augmentations whose drift score is >= X")
    p.add_argument("--ids", type=_ids, nargs="+", default=None,
                   help="only these augmentation ids: 3 4 9, 3,4,9 or ranges 3-7")
    p.add_argument("--only-pending", action="store_true", help="only augmentations that are still pending")
    p.set_defaults(func=run_review)


def run_review(args: argparse.Namespace) -> int:
    from ..workspace.decisions import describe_undo, history
    from ..workspace.folder import Workspace

    workspace = Workspace(args.workspace, create=False)
    from .curation import run_auto_review, wants_auto_review
    if wants_auto_review(args):
        return run_auto_review(args, workspace)
    if args.history is not None:
        workspace.manifest.get_augmentation(args.history)  # a clear error for an unknown id
        for row in history(workspace.manifest, args.history):
            print(f"{row['created_at']}  {row['previous_status']} -> {row['status']}  ({row['origin']}"
                  f"{', bulk' if row['bulk'] else ''}, decision #{row['batch_id']})")
        return 0
    if args.undo:
        print(describe_undo(workspace.undo_last_review(origin="cli")))
        return 0
    ids = None if args.ids is None else [i for group in args.ids for i in group]
    decision = workspace.review(
        args.new_status, origin="cli", label=args.label, prompt=args.prompt, max_drift=args.max_drift,
        min_drift=args.min_drift, ids=ids, current_status="pending" if args.only_pending else None,
    )
    print(f"{decision.matched} augmentation(s) marked {args.new_status} ({decision.changed} changed; "
          f"undo with `review --workspace {args.workspace} --undo`)")
    return 0


# check -----------------------------------------------------------------------------------------------------
def _add_check(subparsers) -> None:
    p = subparsers.add_parser(
        "check",
        help="check a workspace: SQLite integrity, store against manifest (orphans, missing files)",
        description="Run SQLite's integrity check on the manifest and compare the image store with it: files no "
                    "row refers to (orphans), files rows refer to that are missing, temp files of dead writers. "
                    "Exit status 0 when all is well, 1 otherwise. --fix removes orphans and dead temp files after "
                    "the report (never when the manifest itself is damaged).",
    )
    _workspace_argument(p, must_exist=True)
    p.add_argument("--fix", action="store_true", help="after the report, remove orphans and dead writers' temp files")
    p.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from ..workspace.folder import Workspace

    workspace = Workspace(args.workspace, create=False, clean_up=False)  # the report comes before any removal
    report = workspace.check(fix=args.fix)
    print(f"manifest: {'ok' if not report.integrity_errors else 'DAMAGED'}; store: {report.files} files, "
          f"{report.referenced} referenced, {len(report.orphans)} orphan(s), {len(report.missing)} missing, "
          f"{report.temp_files} temp file(s) of dead writers ({report.seconds:.2f} s)")
    for line in report.integrity_errors[:20]:
        print(f"  integrity: {line}")
    for rel in report.missing[:20]:
        print(f"  missing: {rel}")
    for rel in report.orphans[:20]:
        print(f"  orphan: {rel}")
    if args.fix and report.integrity_errors:
        print("not fixed: the manifest is damaged; " + workspace.restore_advice(), file=sys.stderr)
    elif args.fix:
        print(f"removed {report.removed} file(s)")
    elif report.orphans or report.temp_files:
        print(f"run `check --workspace {args.workspace} --fix` to remove them")
    return 0 if report.ok or (args.fix and not report.integrity_errors and not report.missing) else EXIT_ERROR


# export ----------------------------------------------------------------------------------------------------
def _add_export(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write the selected augmentations as an ImageFolder dataset with metadata.csv",
        description="Write DIR/<label>/aug_<id>.png (torchvision ImageFolder layout; labels made safe for the "
                    "filesystem), DIR/metadata.csv (file_name relative to DIR, label, prompt, mask, fractal, lam, "
                    "seed, source, ...: Hugging Face `imagefolder` loads it as is) and DIR/manifest.sqlite with just "
                    "the exported rows. Nothing is ever written outside DIR.",
    )
    _workspace_argument(p, must_exist=True)
    p.add_argument("--to", type=Path, required=True, help="export folder; must be empty unless --overwrite")
    p.add_argument("--status", choices=["approved", "pending", "rejected", "all"], default="approved",
                   help="which augmentations to export (default approved)")
    p.add_argument("--label", default=None, help="only this label")
    p.add_argument("--prompt", default=None, help="only this prompt")
    p.add_argument("--max-drift", type=float, default=None, help="only augmentations with drift <= X")
    p.add_argument("--include-originals", action="store_true",
                   help="also write each source image once, as DIR/<label>/orig_<id>.png (orientation-corrected)")
    p.add_argument("--zip", nargs="?", const=True, default=False, metavar="PATH",
                   help="also write a zip of DIR: DIR.zip next to it, or PATH")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty DIR (a previous export there is replaced)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..workspace.folder import Workspace

    result = Workspace(args.workspace, create=False).export(
        args.to, status=args.status, include_originals=args.include_originals, make_zip=args.zip,
        overwrite=args.overwrite, label=args.label, prompt=args.prompt, max_drift=args.max_drift,
    )
    extra = f" and {result.originals} originals" if args.include_originals else ""
    print(f"exported {result.count} augmentation(s){extra} to {result.path}"
          + (f"; zip: {result.zip_path}" if result.zip_path else ""))
    if result.count == 0:
        print(f"note: no augmentation has status '{args.status}'; review some first or pass --status all.",
              file=sys.stderr)
    return 0
