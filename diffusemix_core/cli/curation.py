"""Curation commands of ``python -m diffusemix_core``: ``score`` and ``report``.

* ``score``: label consistency (zero-shot CLIP over the class names) and quality flags of every Î and A that has
  none yet from the scorer asked for (resumable, batched);
* ``report``: per prompt (``--by-class``: per prompt and class) the mean label probability of A and Î, drift,
  flagged share and the approval rate of people's decisions, and the gain training measured per prompt
  (``train --per-prompt``) when there is one; ``--csv FILE`` writes it.

The rules of ``review --auto`` that read these scores are in ``auto_review.py``. The work is in ``curation/``;
handlers parse, call it and print. Errors propagate to ``cli.main`` (one line).
"""

from __future__ import annotations

import argparse
import csv
import signal
import sys
import threading
from pathlib import Path

from .args import add_scorer_arguments, add_workspace_argument, scorer_ref, whole_number
from .console import EXIT_INTERRUPTED, install_sigint, scorer_note

__all__ = ["add_subcommands", "run_map", "run_report", "run_score"]

_positive_int = whole_number(1)


def add_subcommands(subparsers) -> None:
    """Register score and report on the main parser's subparsers."""
    _add_score(subparsers)
    _add_report(subparsers)
    _add_map(subparsers)


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
    add_workspace_argument(p)
    add_scorer_arguments(p)
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per batch (default 32)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps (default auto: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="scorer precision (default auto: float16 on GPU, float32 on CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in logs)")
    p.set_defaults(func=run_score)


def run_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

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
    previous = install_sigint(cancel)
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
    elif not summary.augmentations and not summary.generations and not summary.embedded:
        print(f"nothing to score: every image of '{args.workspace}' has scores from {what}")
    else:
        print(f"scored {summary.augmentations} augmentation(s) and {summary.generations} generated image(s) with "
              f"{what} in {summary.seconds:.1f} s; {summary.flagged} flagged")
    if summary.embedded:
        print(f"  kept {summary.embedded} image embedding(s) of I, Î and A ({summary.sources} source(s)) for the "
              "probe and the map")
    if summary.probe is not None:
        print(f"  {summary.probe.describe()}")
    if summary.unlabelled:
        print(f"  {summary.unlabelled} augmentation(s) have no class (app images saved without a label): flags only")
    scorer_note(summary.scorer, summary.is_test_model)
    if summary.cancelled:
        print("stopped early: re-run the same command to finish the job.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


# report ----------------------------------------------------------------------------------------------------
class _ReportHelp(argparse.HelpFormatter):
    """Names the report's columns when the help is shown: they are defined beside the queries, whose import pulls
    in the store (sqlite-utils, pandas), which building the parser must not."""

    def add_text(self, text):
        if text and "{columns}" in text:
            from ..curation.queries import REPORT_COLUMNS

            text = text.replace("{columns}", ", ".join(REPORT_COLUMNS))
        super().add_text(text)


def _add_report(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="per prompt (and class): label consistency, drift, flags and people's approval rate",
        description="Which prompts break which classes: per prompt (--by-class: per prompt and class) the number "
                    "of augmentations, the mean probability of the true class for A and for Î (latest label scorer, "
                    "or --scorer), the share where it is CLIP's top choice, mean drift, the share with a quality "
                    "flag, and approved / (approved + rejected) over the decisions people made (not rules). "
                    "Columns: {columns}.",
        epilog="example: python -m diffusemix_core report --workspace ws --by-class --csv report.csv",
        formatter_class=_ReportHelp,
    )
    add_workspace_argument(p)
    p.add_argument("--by-class", action="store_true", help="one row per prompt and class (label)")
    p.add_argument("--probe", action="store_true",
                   help="per class instead: the probe trained on your labelled images vs zero-shot CLIP (threshold, "
                        "held-out accuracy, the class it is confused with, shares each calls off-class, agreement)")
    p.add_argument("--csv", type=Path, default=None, metavar="FILE", help="also write the rows to FILE (CSV)")
    p.add_argument("--scorer", type=scorer_ref, default=None,
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


def _print_table(columns: list[str], rows: list[dict], left: int) -> None:
    table = [columns] + [[_cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(w) if i < left else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(line, widths))).rstrip())


def _write_csv(path: Path, columns, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({c: ("" if r[c] is None else r[c]) for c in columns} for r in rows)
    print(f"wrote {len(rows)} row(s) to {path}")


def run_probe_report(args: argparse.Namespace, workspace) -> int:
    from ..curation.probe_report import PROBE_REPORT_COLUMNS, probe_report

    rows, probe = probe_report(workspace, scorer=args.scorer)
    if probe is None:
        print(f"no probe in '{args.workspace}': run `score` (the probe needs a CLIP scorer and two classes with two "
              "labelled images each)")
        return 0
    print(f"probe report of '{args.workspace}' (probe #{probe['id']} on {probe['model']} embeddings): per class, the "
          "probe trained on your labelled images vs zero-shot CLIP")
    scorer_note(probe["model"], bool(probe["is_test_model"]))
    _print_table(list(PROBE_REPORT_COLUMNS), rows, 1)
    for r in rows:
        if r["confused_with"] and r["confused_share"] >= 0.2:
            print(f"  {r['label']} is confused with {r['confused_with']} by the probe "
                  f"({r['confused_share']:.0%} of its held-out sources)")
    if args.csv is not None:
        _write_csv(args.csv, PROBE_REPORT_COLUMNS, rows)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..curation.queries import REPORT_COLUMNS, prompt_report
    from ..curation.scores import latest_scorer
    from ..workspace.folder import Workspace
    from ..workspace.prompt_gains import describe_gain, latest_prompt_gains

    workspace = Workspace(args.workspace, create=False)
    if args.probe:
        return run_probe_report(args, workspace)
    rows = prompt_report(workspace, by_class=args.by_class, scorer=args.scorer)
    columns = [c for c in REPORT_COLUMNS if c not in ("scorer", "untrained") and (args.by_class or c != "label")]
    scorer = latest_scorer(workspace, scorer=args.scorer)
    total = sum(r["count"] for r in rows)
    print(f"prompt report of '{args.workspace}': {total} augmentation(s), "
          + (f"label scores by {scorer['model']} (scorer #{scorer['id']})" if scorer
             else "no label scores yet (run `score`)"))
    if scorer:
        scorer_note(scorer["model"], bool(scorer["is_test_model"]))
    gains = {} if args.by_class else latest_prompt_gains(workspace)
    if gains:  # what training measured per prompt (train --per-prompt), beside the scores
        columns = columns + ["gain"]
        measured = [gains.get(r["prompt"]) for r in rows]
        rows = [{**r, "gain": describe_gain(g), "gain_low": (g or {}).get("low"), "gain_high": (g or {}).get("high"),
                 "gain_mean": (g or {}).get("gain")} for r, g in zip(rows, measured)]
    _print_table(columns, rows, 2 if args.by_class else 1)
    if args.csv is not None:
        _write_csv(args.csv, [c for c in REPORT_COLUMNS if args.by_class or c != "label"]
                   + (["gain_mean", "gain_low", "gain_high"] if gains else []), rows)
    return 0


# map -------------------------------------------------------------------------------------------------------
def _add_map(subparsers) -> None:
    p = subparsers.add_parser(
        "map",
        help="draw every augmentation as a point of a 2-D map of its CLIP embedding (PNG)",
        description="A 2-D map (PCA of the label scorer's stored CLIP embeddings, cached until the set changes) of "
                    "every augmentation, coloured by class, prompt, status or a score. Its axes are the coordinates "
                    "that `review --in-box x0,y0,x1,y1` selects on.",
        epilog="example: python -m diffusemix_core map --workspace ws --out map.png --color probe_prob; then "
               "python -m diffusemix_core review --workspace ws --reject --in-box=-0.1,-0.3,0.4,0 --dry-run",
    )
    add_workspace_argument(p)
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--color", default="class",
                   help="class, prompt, status or a score: label_prob, generated_label_prob, top_prob, probe_prob, "
                        "drift, label_rank (default class)")
    p.add_argument("--scorer", type=scorer_ref, default=None,
                   help="whose embeddings: a model as given to `score --scorer`, or a scorer id (default: the latest)")
    p.set_defaults(func=run_map)


def run_map(args: argparse.Namespace) -> int:
    from ..curation.embedding_map import draw_map, map_points
    from ..workspace.folder import Workspace

    workspace = Workspace(args.workspace, create=False)
    points = map_points(workspace, args.scorer)
    path, n = draw_map(workspace, args.out, args.color, args.scorer)
    if n:
        low, high = points.xy.min(axis=0), points.xy.max(axis=0)
        extent = f"x {low[0]:.3f} to {high[0]:.3f}, y {low[1]:.3f} to {high[1]:.3f}"
    else:
        extent = "no embedded augmentation yet (run `score`)"
    print(f"wrote {path}: {n} augmentation(s) coloured by {args.color}, {extent} "
          f"({'cached map' if points.cached else 'projected now'}; embeddings of {points.scorer['model']})")
    scorer_note(points.scorer["model"], bool(points.scorer["is_test_model"]))
    return 0
