"""One page of the Curate view: the rows of a query in its order, their previews and captions, and how many match.

:func:`page` reads only the page's rows (``queries.scored_augmentations`` of the ids the query's SQL finds), so
10,000 augmentations page as fast as 100; its previews are the ``workspace.thumbnails`` of A, made by the bulk run
or on first view. A :class:`Page` gives the captions and table rows (marking what a :class:`Selection` holds) and
says in one line where it stands ('Items 49–96 of 10,000 (page 2 of 209) · ...').
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..checks import check_int
from .captions import caption, flags_text, number_text, rank_text, scorer_note
from .filters import SORTS, CurationQuery, QuerySql
from .queries import scored_augmentations
from .selection import Selection

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["DEFAULT_PER_PAGE", "TABLE_COLUMNS", "Page", "page"]

DEFAULT_PER_PAGE = 48
TABLE_COLUMNS = ["✓", "id", "status", "label", "prompt", "p(A)", "rank A", "p(Î)", "rank Î", "drift", "flags A",
                 "flags Î"]


@dataclass(frozen=True)
class Page:
    """One page of a query: rows (``queries.SCORED_COLUMNS``) in order, their previews, and how many match."""

    query: CurationQuery
    rows: list[dict]
    thumbnails: list[Path]
    total: int
    number: int  # 0-based, clamped to the pages there are
    per_page: int
    label_scorer: dict | None = None

    @property
    def ids(self) -> list[int]:
        return [int(r["id"]) for r in self.rows]

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    def captions(self, selection: Selection | None = None) -> list[str]:
        selection = selection or Selection()
        return [caption(row, int(row["id"]) in selection) for row in self.rows]

    def table(self, selection: Selection | None = None) -> list[list]:
        """The rows as :data:`TABLE_COLUMNS` (text, for a table beside the grid)."""
        selection = selection or Selection()
        return [["✓" if int(r["id"]) in selection else "", int(r["id"]), r["status"], r["label"], r["prompt"],
                 number_text(r["label_prob"], 3), rank_text(r["label_rank"]),
                 number_text(r["generated_label_prob"], 3), rank_text(r["generated_label_rank"]),
                 number_text(r["drift"], 3), flags_text(r["flags"]), flags_text(r["generated_flags"])]
                for r in self.rows]

    def describe(self) -> str:
        """'Items 49–96 of 10,000 (page 2 of 209) · label cats, status pending' (+ the untrained-scorer note)."""
        if not self.total:
            text = f"Nothing matches ({self.query.describe()})."
        else:
            first = self.number * self.per_page + 1
            text = (f"Items {first}–{first + len(self.rows) - 1} of {self.total:,} (page {self.number + 1} of "
                    f"{self.pages}) · {self.query.describe()} · sorted by {SORTS[self.query.sort][0]}.")
        return text + scorer_note(self.label_scorer)


def page(workspace: Workspace, query: CurationQuery, number: int = 0, per_page: int = DEFAULT_PER_PAGE) -> Page:
    """Page `number` (0-based; past the end gives the last page) of what `query` matches: only its rows are read,
    its previews are made if missing (``workspace.thumbnails``)."""
    per_page = check_int("per_page", per_page, minimum=1, maximum=1000)
    number = max(0, int(number))
    with workspace.manifest.session() as db:
        sql = QuerySql.of(workspace, query, db)
        total = sql.count(db)
        number = min(number, max(0, math.ceil(total / per_page) - 1))
        ids = sql.ids(db, SORTS[query.sort][1], per_page, number * per_page)
    label_id = sql.label_scorer and sql.label_scorer["id"]
    by_id = {r["id"]: r for r in scored_augmentations(workspace, scorer=label_id, ids=ids)} if ids else {}
    rows = [by_id[i] for i in ids if i in by_id]
    stored = {r["id"]: r for r in workspace.manifest.list_augmentations(ids=ids)} if ids else {}
    thumbnails = [workspace.thumbnails.for_row(workspace, stored[r["id"]]) for r in rows]
    return Page(query=query, rows=rows, thumbnails=thumbnails, total=total, number=number, per_page=per_page,
                label_scorer=sql.label_scorer)
