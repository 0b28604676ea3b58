"""Decisions on many augmentations, counted before they are made: the selection, everything a filter matches, or
everything past a threshold.

:func:`plan_selected`, :func:`plan_matching` and :func:`plan_threshold` say how many items they would change and
change nothing; :meth:`DecisionPlan.question` asks it in words, and :meth:`DecisionPlan.apply` records the decision
(``workspace.decisions``), as one bulk decision that one undo reverts, on exactly the ids that were counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BadArgumentError, WorkspaceError
from ..workspace.decisions import Decision
from ..workspace.manifest import check_status
from .filters import CurationQuery, matching_ids
from .histogram import histogram_score, threshold_sql
from .selection import Selection

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["DecisionPlan", "plan_matching", "plan_selected", "plan_threshold"]

LEFT_OUT_NAMED = 5  # left-out items named in a question


@dataclass(frozen=True)
class DecisionPlan:
    """A decision counted before it is made: `status` for exactly `ids`; nothing changes until :meth:`apply`."""

    status: str
    ids: tuple[int, ...]
    what: str  # 'from the selection', 'matching the filter (…)', 'shown with label prob of A below 0.20'
    left_out: int = 0  # selected items the filter no longer shows: left alone
    origin: str = "app"
    left_out_ids: tuple[tuple[int, str], ...] = ()  # (id, its status now) of the first left-out items

    def left_out_text(self) -> str:
        """Which selected items are left alone and why ('' when none): '#12 is approved now, …'."""
        if not self.left_out:
            return ""
        named = ", ".join(f"#{i} is {status} now" for i, status in self.left_out_ids)
        more = f", … {self.left_out - len(self.left_out_ids)} more" if self.left_out > len(self.left_out_ids) else ""
        noun = "item is" if self.left_out == 1 else "items are"
        return (f"{self.left_out} selected {noun} left alone: the filter no longer matches "
                f"{'it' if self.left_out == 1 else 'them'} ({named}{more}).")

    @property
    def count(self) -> int:
        return len(self.ids)

    def question(self) -> str:
        verb = {"approved": "Approve", "rejected": "Reject", "pending": "Reset to pending"}[self.status]
        noun = "augmentation" if self.count == 1 else "augmentations"
        text = f"{verb} {self.count:,} {noun} {self.what}?"
        if self.left_out:
            text += f" ({self.left_out_text()})"
        return text + " Nothing changes until you confirm."

    def apply(self, workspace: Workspace) -> Decision:
        """Record the decision on the counted ids (one bulk decision: ``Undo`` reverts it)."""
        if not self.ids:
            raise BadArgumentError("nothing to decide: the plan holds no augmentation.")
        return workspace.review(self.status, ids=list(self.ids), origin=self.origin)

    def outcome(self, decision: Decision) -> str:
        verb = {"approved": "Approved", "rejected": "Rejected", "pending": "Reset to pending"}[self.status]
        noun = "augmentation" if decision.matched == 1 else "augmentations"
        return (f"✅ {verb} {decision.matched:,} {noun} {self.what} ({decision.changed:,} changed; the Undo "
                "button reverts it).")


def plan_selected(workspace: Workspace, query: CurationQuery, selection: Selection, status: str) -> DecisionPlan:
    """`status` for the selected items that the query still matches (the others are counted and left alone)."""
    status = check_status(status)
    if not len(selection):
        raise BadArgumentError("nothing is selected: view an item and press 'Select', or 'Select page'.")
    ids = matching_ids(workspace, query, within=selection.ids)
    left = [i for i in selection if i not in set(ids)]
    named = tuple((i, _status_of(workspace, i)) for i in left[:LEFT_OUT_NAMED])
    return DecisionPlan(status, tuple(ids), "from the selection", left_out=len(left), left_out_ids=named)


def _status_of(workspace: Workspace, aug_id: int) -> str:
    try:
        return str(workspace.manifest.get_augmentation(aug_id)["status"])
    except WorkspaceError:  # deleted since it was selected
        return "gone"


def plan_matching(workspace: Workspace, query: CurationQuery, status: str) -> DecisionPlan:
    """`status` for every item the query matches (all pages)."""
    status = check_status(status)
    return DecisionPlan(status, tuple(matching_ids(workspace, query)), f"matching the filter ({query.describe()})")


def plan_threshold(workspace: Workspace, query: CurationQuery, score: str, threshold: float) -> DecisionPlan:
    """Reject the items the query matches whose `score` is past `threshold` (``histogram.threshold_count`` of them)."""
    spec = histogram_score(score)
    with workspace.manifest.session() as db:
        ids = threshold_sql(workspace, query, score, threshold, db).ids(db)
    return DecisionPlan("rejected", tuple(ids), f"shown with {spec.title} {spec.side} {float(threshold):.2f}")
