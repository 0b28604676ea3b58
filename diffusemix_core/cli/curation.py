"""Curation subcommands of ``python -m diffusemix_core``: ``score`` and ``report``, and ``review --auto``.

* ``score``: label consistency (zero-shot CLIP over the class names) and quality flags of every Î and A that has
  none yet from the scorer asked for (resumable, batched);
* ``report``: per prompt (``--by-class``: per prompt and class) the mean label probability of A and Î, drift,
  flagged share and the approval rate of people's decisions; ``--csv FILE`` writes it;
* ``review --auto``: the rules ``--min-label-prob``, ``--max-drift``, ``--reject-flagged`` reject the pending
  augmentations that break them, recorded as one decision of origin ``auto``; ``--dry-run`` prints the counts only.

The work is in ``scores.py``; handlers parse, call it and print. Errors propagate to ``cli.main`` (one line).
"""

from __future__ import annotations

import argparse
import csv
import signal
import sys
import threading
from pathlib import Path

from .main import whole_number
from ..engine.test_models import UNTRAINED_SCORER_NOTE

__all__ = ["add_auto_review_arguments", "add_scorer_arguments", "add_subcommands", "print_run_scores",
           "run_auto_review", "run_report", "run_score", "wants_auto_review"]

_AUTO_ONLY = ("min_label_prob", "reject_flagged", "dry_run", "scorer")


def add_scorer_arguments(parser: argparse.ArgumentParser) -> None:
    """``--scorer`` and ``--class-map`` (augment and score)."""
    g = parser.add_argument_group("scores")
    g.add_argument("--scorer", default="auto",
                   help="label-consistency scorer: a CLIP model id or local folder; auto (default): "
                        "openai/clip-vit-base-patch32, or tiny-random-clip (untrained, offline) for a test generator "
                        "model; none: no scores (`score --scorer none`: the quality flags only)")
    g.add_argument("--class-map", type=Path, default=None, metavar="FILE",
                   help="class names for the class folders: 'FOLDER NAME' lines (.txt, e.g. ImageNet's "
                        "LOC_synset_mapping.txt), a JSON object or a two-column CSV; remembered in the workspace "
                        "(default: the remembered one, else folder names with _ and - as spaces)")


def add_subcommands(subparsers) -> None:
    """Register score and report on the main parser's subparsers."""
    _add_score(subparsers)
    _add_report(subparsers)


def _workspace_argument(parser: argparse.ArgumentParser) -> None:
    from .workspace import _workspace_argument as add

    add(parser, must_exist=True)


_positive_int = whole_number(1)


def _note(model: str | None, is_test_model: bool) -> None:
    if is_test_model:
        print(f"note: {model} is an {UNTRAINED_SCORER_NOTE}.")


# score -----------------------------------------------------------------------------------------------------
def _add_score(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="score every augmentation: label consistency (CLIP) and quality flags (resumable)",
        description="Add the scores a workspace lacks for one scorer: for every generated image Î and augmentation "
                    "A, the probability and rank of its true class among all the class names (zero-shot CLIP), "
                    "and quality flags (black, blank, low_information; near_duplicate among the Î of one source). "
                    "Only what is missing is scored, in batches, each committed: rerun to resume. Another scorer "
                    "(model or class names) adds its own scores and keeps the others'.",
        epilog="example: python -m diffusemix_core score --workspace ws --class-map LOC_synset_mapping.txt",
    )
    _workspace_argument(p)
    add_scorer_arguments(p)
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per batch (default 32)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps (default auto: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="scorer precision (default auto: float16 on GPU, float32 on CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in logs)")
    p.set_defaults(func=run_score)


def run_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .workspace import _install_sigint
    from ..curation.score_workspace import score_workspace
    from ..workspace.folder import Workspace

    workspace = Workspace(args.workspace, create=False)
    bars: list = []

    def progress(done: int, total: int) -> None:
        if not bars and total:
            bars.append(tqdm(total=total, unit="img", desc="score", disable=args.no_progress, dynamic_ncols=True))
        if bars:
            bars[0].update(done - bars[0].n)

    cancel = threading.Event()
    previous = _install_sigint(cancel)
    try:
        summary = score_workspace(workspace, args.scorer, class_map=args.class_map, device=args.device,
                                  dtype=args.dtype, batch_size=args.batch_size, progress=progress, cancel=cancel)
    finally:
        for bar in bars:
            bar.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    flags = "the quality flags" + (f" (#{summary.quality_id})" if summary.quality_id else "")
    label = summary.scorer and summary.scorer + (f" (scorer #{summary.scorer_id})" if summary.scorer_id else "")
    what = f"{label} and {flags}" if label else flags
    if summary.quality_id is None:
        print(f"nothing to score: '{args.workspace}' has no augmentations yet")
    elif not summary.augmentations and not summary.generations:
        print(f"nothing to score: every image of '{args.workspace}' has scores from {what}")
    else:
        print(f"scored {summary.augmentations} augmentation(s) and {summary.generations} generated image(s) with "
              f"{what} in {summary.seconds:.1f} s; {summary.flagged} flagged")
    if summary.unlabelled:
        print(f"  {summary.unlabelled} augmentation(s) have no class (app images saved without a label): flags only")
    _note(summary.scorer, summary.is_test_model)
    if summary.cancelled:
        print("stopped early: re-run the same command to finish the job.", file=sys.stderr)
        return 130
    return 0


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
    _note(summary.scorer, is_test_model(summary.scorer))


# report ----------------------------------------------------------------------------------------------------
def _add_report(subparsers) -> None:
    from ..curation.queries import REPORT_COLUMNS

    p = subparsers.add_parser(
        "report",
        help="per prompt (and class): label consistency, drift, flags and people's approval rate",
        description="Which prompts break which classes: per prompt (--by-class: per prompt and class) the number "
                    "of augmentations, the mean probability of the true class for A and for Î (latest label scorer, "
                    "or --scorer), the share where it is CLIP's top choice, mean drift, the share with a quality "
                    "flag, and approved / (approved + rejected) over the decisions people made (not rules). "
                    f"Columns: {', '.join(REPORT_COLUMNS)}.",
        epilog="example: python -m diffusemix_core report --workspace ws --by-class --csv report.csv",
    )
    _workspace_argument(p)
    p.add_argument("--by-class", action="store_true", help="one row per prompt and class (label)")
    p.add_argument("--csv", type=Path, default=None, metavar="FILE", help="also write the rows to FILE (CSV)")
    p.add_argument("--scorer", default=None,
                   help="whose label scores: a model as given to `score --scorer`, or a scorer id (default: the "
                        "latest added)")
    p.set_defaults(func=run_report)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def run_report(args: argparse.Namespace) -> int:
    from ..curation.queries import REPORT_COLUMNS, prompt_report
    from ..curation.scores import latest_scorer
    from ..workspace.folder import Workspace

    workspace = Workspace(args.workspace, create=False)
    rows = prompt_report(workspace, by_class=args.by_class, scorer=args.scorer)
    columns = [c for c in REPORT_COLUMNS if c not in ("scorer", "untrained") and (args.by_class or c != "label")]
    scorer = latest_scorer(workspace, scorer=args.scorer)
    total = sum(r["count"] for r in rows)
    print(f"prompt report of '{args.workspace}': {total} augmentation(s), "
          + (f"label scores by {scorer['model']} (scorer #{scorer['id']})" if scorer
             else "no label scores yet (run `score`)"))
    if scorer:
        _note(scorer["model"], bool(scorer["is_test_model"]))
    table = [columns] + [[_cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(w) if i < (2 if args.by_class else 1) else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(line, widths))).rstrip())
    if args.csv is not None:
        csv_columns = [c for c in REPORT_COLUMNS if args.by_class or c != "label"]
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=csv_columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({c: ("" if r[c] is None else r[c]) for c in csv_columns} for r in rows)
        print(f"wrote {len(rows)} row(s) to {args.csv}")
    return 0


# review --auto ---------------------------------------------------------------------------------------------
def add_auto_review_arguments(parser: argparse.ArgumentParser, action) -> None:
    """``--auto`` (in the review parser's action group) and the rules and options that go with it."""
    action.add_argument("--auto", action="store_true",
                        help="reject the PENDING augmentations that break a rule (--min-label-prob, --max-drift, "
                             "--reject-flagged), as one decision of origin 'auto' that records the rules; "
                             "--label, --prompt and --ids narrow what is judged")
    g = parser.add_argument_group("rules (with --auto)")
    g.add_argument("--min-label-prob", type=float, default=None, metavar="P",
                   help="reject when A's probability of its true class (label scores) is below P")
    g.add_argument("--reject-flagged", action="store_true",
                   help="reject when A or Î has a quality flag (black, blank, low_information, near_duplicate)")
    g.add_argument("--scorer", default=None,
                   help="whose label scores --min-label-prob reads: a model as given to `score --scorer`, or a "
                        "scorer id (default: the latest added)")
    g.add_argument("--dry-run", action="store_true",
                   help="print what would be rejected, per rule, label and prompt, and change nothing")


def wants_auto_review(args: argparse.Namespace) -> bool:
    """Whether `args` ask for ``review --auto`` or use one of its options."""
    return bool(getattr(args, "auto", False)) or any(
        getattr(args, name, None) not in (None, False) for name in _AUTO_ONLY)


def _counts(title: str, counts: dict[str, int]) -> None:
    print(f"by {title}:")
    for name, n in counts.items():
        print(f"  {n:>6}  {name}")


def run_auto_review(args: argparse.Namespace, workspace) -> int:
    from ..errors import BadArgumentError
    from ..curation.queries import AutoRules, apply_auto_review, auto_review_plan

    if not getattr(args, "auto", False):
        raise BadArgumentError("--min-label-prob, --reject-flagged, --scorer and --dry-run go with --auto "
                               "(review --auto --min-label-prob 0.2 ...).")
    if args.min_drift is not None:
        raise BadArgumentError("--min-drift is not a rule of --auto; use --max-drift D (reject when drift > D).")
    ids = None if args.ids is None else [i for group in args.ids for i in group]
    rules = AutoRules(min_label_prob=args.min_label_prob, max_drift=args.max_drift,
                      reject_flagged=args.reject_flagged, scorer=args.scorer)
    plan = auto_review_plan(workspace, rules, label=args.label, prompt=args.prompt, ids=ids)
    said = []
    if rules.reject_flagged:
        said.append(f"a quality flag on A or Î (quality #{plan.quality_scorer['id']})")
    if rules.min_label_prob is not None:
        said.append(f"A's label probability < {rules.min_label_prob:g} ({plan.scorer['model']}, "
                    f"scorer #{plan.scorer['id']})")
    if rules.max_drift is not None:
        said.append(f"drift > {rules.max_drift:g}")
    print("rules: reject a pending augmentation with " + "; or ".join(said))
    if plan.scorer is not None:
        _note(plan.scorer["model"], bool(plan.scorer["is_test_model"]))
    per_rule = ", ".join(f"{rule} {n}" for rule, n in plan.by_rule().items())
    verb = "would reject" if args.dry_run else "rejecting"
    print(f"{verb} {len(plan.reject)} of {plan.pending} pending augmentation(s) ({per_rule}; one may break several); "
          f"{plan.pending - len(plan.reject)} stay pending"
          + (f", of which {plan.unscored} could not be judged (a score is missing: run `score`)" if plan.unscored
             else ""))
    _counts("label", plan.counts("label"))
    _counts("prompt", plan.counts("prompt"))
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    decision = apply_auto_review(workspace, plan)
    if decision is None:
        print("nothing to reject")
        return 0
    print(f"decision #{decision.batch_id} (origin auto): {decision.changed} augmentation(s) rejected; undo with "
          f"`review --workspace {args.workspace} --undo`")
    return 0
