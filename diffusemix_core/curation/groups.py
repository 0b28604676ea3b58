"""Curate grouped by source: every augmentation of one source image together (its prompts side by side), so the
prompt that breaks an image shows at a glance, and one decision per group (approve all but the flagged ones).

Groups come in the order of the Curate filter and sort (a source's place is that of its first matching item); a
group holds only the items the filter matches, in prompt order. :func:`groups_page` reads one page of groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..checks import check_int
from ..workspace.decisions import Decision, decide
from .captions import caption
from .filters import CurationQuery, matching_ids
from .queries import scored_augmentations

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["GroupsPage", "SourceGroup", "approve_unflagged", "groups_page"]


@dataclass(frozen=True)
class SourceGroup:
    """One source image and the augmentations of it that the filter matches (scored rows, previews)."""

    source_id: int
    source_path: str
    label: str | None
    rows: list[dict] = field(default_factory=list)
    thumbnails: list[Path] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [int(r["id"]) for r in self.rows]

    @property
    def flagged_ids(self) -> list[int]:
        return [int(r["id"]) for r in self.rows if r.get("flagged")]

    def captions(self) -> list[str]:
        """Short captions, the prompt first (the row is one source): 'rainbow · #12 pending · p 0.52 · ⚑ blank'."""
        return [f"{r['prompt']} · " + caption(r).split(" · " + str(r.get("label", "")) + " · ")[0] for r in self.rows]

    def describe(self) -> str:
        flagged = len(self.flagged_ids)
        return (f"**{self.source_path}** · class **{self.label}** · {len(self.rows)} augmentation"
                f"{'s' if len(self.rows) != 1 else ''}" + (f" · ⚑ {flagged} flagged" if flagged else ""))


@dataclass(frozen=True)
class GroupsPage:
    groups: list[SourceGroup]
    number: int
    pages: int
    total: int  # groups matching

    def describe(self) -> str:
        if not self.total:
            return "Nothing matches the filter."
        return f"Page {self.number + 1} of {self.pages} · {self.total:,} sources with matching items."


def _source_order(workspace: Workspace, query: CurationQuery) -> tuple[list[int], dict[int, list[int]]]:
    """(source ids in the order of the query, the matching augmentation ids of each)."""
    ids = matching_ids(workspace, query)
    with workspace.manifest.session() as db:
        source_of = dict(db.execute("SELECT id, source_id FROM augmentations").fetchall())
    members: dict[int, list[int]] = {}
    for aug_id in ids:
        members.setdefault(source_of[aug_id], []).append(aug_id)
    return list(members), members


def groups_page(workspace: Workspace, query: CurationQuery, number: int = 0, per_page: int = 6) -> GroupsPage:
    """Page `number` (0-based; past the end: the last page) of the sources the query matches, `per_page` each."""
    per_page = check_int("per_page", per_page, minimum=1, maximum=100)
    order, members = _source_order(workspace, query)
    pages = max(1, math.ceil(len(order) / per_page))
    number = min(max(0, int(number)), pages - 1)
    shown = order[number * per_page:(number + 1) * per_page]
    ids = [i for s in shown for i in members[s]]
    scored = {r["id"]: r for r in scored_augmentations(workspace, ids=ids)} if ids else {}
    stored = {r["id"]: r for r in workspace.manifest.list_augmentations(ids=ids)} if ids else {}
    groups = []
    for source_id in shown:
        rows = sorted((scored[i] for i in members[source_id] if i in scored), key=lambda r: (str(r["prompt"]), r["id"]))
        first = stored[rows[0]["id"]] if rows else {}
        groups.append(SourceGroup(source_id, str(first.get("source_path", f"source {source_id}")), first.get("label"),
                                  rows, [workspace.thumbnails.for_row(workspace, stored[r["id"]]) for r in rows]))
    return GroupsPage(groups, number, pages, len(order))


def approve_unflagged(workspace: Workspace, group: SourceGroup) -> tuple[Decision | None, str]:
    """Approve the group's items that carry no quality flag (one bulk decision: Undo reverts it); the flagged ones
    are left as they are. Gives the decision (None when there was nothing to approve) and a sentence."""
    ids = [i for i in group.ids if i not in set(group.flagged_ids)]
    left = len(group.flagged_ids)
    if not ids:
        return None, f"Nothing approved in {group.source_path}: all {left} of its items are flagged."
    # one id is recorded as a bulk decision too, so that Undo reverts a group's decision whatever its size
    decision = (workspace.review("approved", ids=ids, origin="app") if len(ids) > 1 else
                decide(workspace.manifest, "approved", origin="app", ids=ids, bulk=True))
    return decision, (f"✅ Approved {len(ids)} of {group.source_path}" + (f"; {left} flagged left as they are" if left
                      else "") + " (Undo last bulk decision reverts it).")
