"""``review --auto``: the rules (``--min-label-prob``, ``--max-drift``, ``--reject-flagged``) that reject the pending
augmentations breaking them, recorded as one decision of origin ``auto``; ``--dry-run`` prints the counts only.

The ``review`` command (``workspace.py``) adds these flags to its parser and hands a run to :func:`run_auto_review`
when they are asked for; the rules themselves are ``curation.queries``'s.
"""

from __future__ import annotations

import argparse

from .args import joined_ids, scorer_ref
from .console import scorer_note

__all__ = ["add_auto_review_arguments", "run_auto_review", "wants_auto_review"]

_AUTO_ONLY = ("min_label_prob", "reject_flagged", "scorer", "min_probe_prob", "reject_probe_low")


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
    g.add_argument("--min-probe-prob", type=float, default=None, metavar="P",
                   help="reject when the probe (trained on your labelled images by `score`) gives A's class a "
                        "probability below P")
    g.add_argument("--reject-probe-low", action="store_true",
                   help="reject when A is below its class's probe threshold (confident learning: the mean probe "
                        "probability of that class's real images)")
    g.add_argument("--scorer", type=scorer_ref, default=None,
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
    ids = joined_ids(args.ids)
    rules = AutoRules(min_label_prob=args.min_label_prob, max_drift=args.max_drift,
                      reject_flagged=args.reject_flagged, scorer=args.scorer, min_probe_prob=args.min_probe_prob,
                      reject_probe_low=args.reject_probe_low)
    plan = auto_review_plan(workspace, rules, label=args.label, prompt=args.prompt, ids=ids)
    said = []
    if rules.reject_flagged:
        said.append(f"a quality flag on A or Î (quality #{plan.quality_scorer['id']})")
    if rules.min_label_prob is not None:
        said.append(f"A's label probability < {rules.min_label_prob:g} ({plan.scorer['model']}, "
                    f"scorer #{plan.scorer['id']})")
    if rules.max_drift is not None:
        said.append(f"drift > {rules.max_drift:g}")
    if rules.min_probe_prob is not None:
        said.append(f"the probe's probability of A's class < {rules.min_probe_prob:g}")
    if rules.reject_probe_low:
        said.append("A below its class's probe threshold")
    print("rules: reject a pending augmentation with " + "; or ".join(said))
    if plan.scorer is not None:
        scorer_note(plan.scorer["model"], bool(plan.scorer["is_test_model"]))
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
