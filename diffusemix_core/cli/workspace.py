"""Workspace commands of ``python -m diffusemix_core``: ``status``, ``review``, ``check``, ``export``.

Each handler takes the argparse namespace and returns an exit status; errors of the project's types propagate to
``cli.main``, which prints them in one line (the traceback with ``--verbose``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .args import (
    add_workspace_argument,
    id_list,
    joined_ids,
    row_id,
    whole_number,
)
from .auto_review import add_auto_review_arguments, run_auto_review, wants_auto_review
from .console import EXIT_ERROR

log = logging.getLogger(__name__)

__all__ = ["add_subcommands", "run_status", "run_review", "run_check", "run_export"]


_positive_int = whole_number(1)


def add_subcommands(subparsers) -> None:
    """Register status, review, check and export on the main parser's subparsers (augment: ``augment.py``)."""
    _add_status(subparsers)
    _add_review(subparsers)
    _add_check(subparsers)
    _add_export(subparsers)


# status ----------------------------------------------------------------------------------------------------
def _add_status(subparsers) -> None:
    p = subparsers.add_parser(
        "status",
        help="counts of a workspace by status, label and prompt; failed images with their reasons",
        description="Print what a workspace holds: augmentations by status, label and prompt, and every source "
                    "image that could not be read, with the reason.",
    )
    add_workspace_argument(p)
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
          f"{summary['generations']} generated images, {summary['exports']} exports"
          + (f" (and {summary['training_exports']} made by train)" if summary.get("training_exports") else ""))
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


def _review_in_box(args: argparse.Namespace, workspace, ids) -> int:
    """review --approve/--reject/--reset --in-box: the augmentations in a region of the map (and the other filters)."""
    from ..curation.embedding_map import map_points, parse_box
    from ..curation.queries import scored_augmentations

    box = parse_box(args.in_box)
    points = map_points(workspace)
    rows = scored_augmentations(workspace, scorer=points.scorer["id"], label=args.label, prompt=args.prompt,
                                max_drift=args.max_drift, min_drift=args.min_drift, ids=ids, in_box=box,
                                status="pending" if args.only_pending else None)
    chosen = [r["id"] for r in rows]
    print(f"{len(chosen)} augmentation(s) in the box ({box[0]:g}, {box[1]:g})–({box[2]:g}, {box[3]:g}) of the map "
          f"of {points.scorer['model']} embeddings ({len(points.ids)} on the map)")
    if args.dry_run:
        print(f"dry run: would mark them {args.new_status}; nothing changed")
        return 0
    if not chosen:
        print("nothing to change")
        return 0
    decision = workspace.review(args.new_status, origin="cli", ids=chosen)
    print(f"{decision.matched} augmentation(s) marked {args.new_status} ({decision.changed} changed; "
          f"undo with `review --workspace {args.workspace} --undo`)")
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
    add_workspace_argument(p)
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--approve", dest="new_status", action="store_const", const="approved",
                        help="mark the matching augmentations approved")
    action.add_argument("--reject", dest="new_status", action="store_const", const="rejected",
                        help="mark the matching augmentations rejected")
    action.add_argument("--reset", dest="new_status", action="store_const", const="pending",
                        help="mark the matching augmentations pending again")
    action.add_argument("--undo", action="store_true",
                        help="revert the last bulk decision (items decided again since are left as they are)")
    action.add_argument("--history", type=row_id, metavar="ID", default=None,
                        help="print every decision on augmentation ID")
    add_auto_review_arguments(p, action)
    p.add_argument("--label", default=None, help="only this label (class folder name, exactly)")
    p.add_argument("--prompt", default=None, help="only this prompt (raw text, e.g. 'autumn')")
    p.add_argument("--max-drift", type=float, default=None,
                   help="only augmentations whose drift score (0 = Î like I, 1 = unrelated) is <= X; with --auto: "
                        "the rule 'reject when drift > X'")
    p.add_argument("--min-drift", type=float, default=None, help="only augmentations whose drift score is >= X")
    p.add_argument("--ids", type=id_list, nargs="+", default=None,
                   help="only these augmentation ids: 3 4 9, 3,4,9 or ranges 3-7")
    p.add_argument("--only-pending", action="store_true", help="only augmentations that are still pending")
    p.add_argument("--in-box", default=None, metavar="X0,Y0,X1,Y1",
                   help="only augmentations inside this box of the map (the coordinates of `map --out map.png`'s "
                        "axes; write --in-box=-0.2,... when it starts with a minus); with --dry-run, count them and change "
                        "nothing")
    p.set_defaults(func=run_review)


def run_review(args: argparse.Namespace) -> int:
    from ..workspace.decisions import describe_undo, history
    from ..workspace.folder import Workspace

    workspace = Workspace(args.workspace, create=False)
    if wants_auto_review(args):
        return run_auto_review(args, workspace)
    if (args.dry_run or args.in_box is not None) and (args.new_status is None or args.in_box is None):
        from ..errors import BadArgumentError

        raise BadArgumentError("--dry-run goes with --auto or with --in-box, and --in-box with --approve, --reject "
                               "or --reset (review --reject --in-box x0,y0,x1,y1 --dry-run).")
    if args.history is not None:
        augmentation = workspace.manifest.get_augmentation(args.history)  # a clear error for an unknown id
        rows = history(workspace.manifest, args.history)
        for row in rows:
            print(f"{row['created_at']}  {row['previous_status']} -> {row['status']}  ({row['origin']}"
                  f"{', bulk' if row['bulk'] else ''}, decision #{row['batch_id']})")
        if not rows:
            print(f"no decision on augmentation {args.history} yet: it is {augmentation['status']} as it was made")
        return 0
    if args.undo:
        print(describe_undo(workspace.undo_last_review(origin="cli")))
        return 0
    ids = joined_ids(args.ids)
    if args.in_box is not None:
        return _review_in_box(args, workspace, ids)
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
    add_workspace_argument(p)
    p.add_argument("--fix", action="store_true", help="after the report, remove orphans and dead writers' temp files")
    p.add_argument("--restore", action="store_true",
                   help="replace a damaged or missing manifest by the newest sound backup (its -wal and -shm files "
                        "and the damaged file are set aside in backups/ first), then check")
    p.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from ..workspace.folder import Workspace, restore_backup

    if args.restore:
        print(restore_backup(args.workspace).describe())
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
    add_workspace_argument(p)
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
