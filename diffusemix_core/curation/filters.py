"""What the Curate view shows, and in what order: a query over the scored augmentations, and the SQL it becomes.

:class:`CurationQuery` holds the filters (label, prompt, status, flags, ranges of A's label probability and of drift)
and the sort (:data:`SORTS`), over the latest label scorer and quality flags (``scores.py``); it is made from the
Curate form's values (:meth:`CurationQuery.from_form`) and said in words (:meth:`CurationQuery.describe`).
:class:`QuerySql` turns it into SQL over the joins of ``queries.py`` (one index seek per score), which the page,
the histogram and the counted decision plans run; :func:`matching_ids` and :func:`filter_choices` answer the form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BadArgumentError
from ..workspace.manifest import check_status
from .probe import probe_scorer
from .queries import _scored_sql, scored_filters
from .scores import LABEL_KIND, QUALITY_KIND, latest_scorer

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["ALL", "FLAG_FILTERS", "SORTS", "CurationQuery", "QuerySql", "filter_choices", "matching_ids",
           "unit_value"]

ALL = "all"  # the form value that means "no filter"
FLAG_FILTERS = {"all": None, "flagged": True, "clean": False}

# sort key -> (words for people, ORDER BY over the aliases of ``queries._scored_sql``: a = augmentations,
# pa / pg = label probability of A / Î, fa / fg = flags of A / Î)
SORTS: dict[str, tuple[str, str]] = {
    "newest": ("newest first", "a.id DESC"),
    "oldest": ("oldest first", "a.id"),
    "drift": ("drift, highest first", "a.drift IS NULL, a.drift DESC, a.id"),
    "label_prob": ("label prob of A, lowest first", "pa.value IS NULL, pa.value, a.id"),
    "generated_label_prob": ("label prob of Î, lowest first", "pg.value IS NULL, pg.value, a.id"),
    "probe_prob": ("probe prob of A, lowest first", "pp.value IS NULL, pp.value, a.id"),
    "flags": ("flags, flagged first", "fa.value IS NULL AND fg.value IS NULL, "
                                      "coalesce(fa.value, 0) + coalesce(fg.value, 0) DESC, a.id"),
    "label": ("label (A to Z)", "a.label, a.id"),
    "prompt": ("prompt (A to Z)", "a.prompt, a.id"),
    "status": ("status", "a.status, a.id"),
}


def unit_value(name: str, value: float | None) -> float | None:
    """`value` as a float in [0, 1] (None stays None), else BadArgumentError naming `name`."""
    if value is None:
        return None
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise BadArgumentError(f"{name} must be in [0, 1], got {value}.")
    return value


@dataclass(frozen=True)
class CurationQuery:
    """Which augmentations a page shows and in what order (all filters ANDed; None = no filter).

    ``min_label_prob`` / ``max_label_prob`` filter on A's label probability and never match an unscored item;
    ``flagged``: True = a flag on A or Î, False = checked and clean. ``scorer``: a label scorer (model or id) other
    than the latest.
    """

    label: str | None = None
    prompt: str | None = None
    status: str | None = None
    flagged: bool | None = None
    min_label_prob: float | None = None
    max_label_prob: float | None = None
    min_drift: float | None = None
    max_drift: float | None = None
    sort: str = "newest"
    scorer: str | int | None = None
    min_probe_prob: float | None = None
    probe_low: bool | None = None  # True: below its class's probe threshold
    in_box: tuple[float, float, float, float] | None = None  # a region of the map: x0, y0, x1, y1

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise BadArgumentError(f"sort must be one of {', '.join(SORTS)}, got {self.sort!r}.")
        if self.status is not None:
            check_status(self.status)
        for name in ("min_label_prob", "max_label_prob", "min_drift", "max_drift", "min_probe_prob"):
            unit_value(name, getattr(self, name))

    @classmethod
    def from_form(cls, label: str | None = ALL, prompt: str | None = ALL, status: str | None = ALL,
                  flags: str | None = ALL, sort: str | None = "newest", min_label_prob: float | None = 0.0,
                  max_label_prob: float | None = 1.0, min_drift: float | None = 0.0,
                  max_drift: float | None = 1.0) -> CurationQuery:
        """A query from the Curate form's values: ``all`` (or empty) is no filter, and a range that spans all of
        [0, 1] is no filter (so unscored items stay in view)."""
        def chosen(value):
            return None if value in (None, "", ALL) else str(value)

        if (flags or ALL) not in FLAG_FILTERS:
            raise BadArgumentError(f"flags must be one of {', '.join(FLAG_FILTERS)}, got {flags!r}.")

        def low(value):
            return None if value is None or float(value) <= 0.0 else float(value)

        def high(value):
            return None if value is None or float(value) >= 1.0 else float(value)

        return cls(label=chosen(label), prompt=chosen(prompt), status=chosen(status),
                   flagged=FLAG_FILTERS[flags or ALL], min_label_prob=low(min_label_prob),
                   max_label_prob=high(max_label_prob), min_drift=low(min_drift), max_drift=high(max_drift),
                   sort=sort or "newest")

    def describe(self) -> str:
        """The filters in words ('label cats, status pending'), or 'every augmentation'."""
        parts = [f"{name} {value}" for name, value in (("label", self.label), ("prompt", self.prompt),
                                                       ("status", self.status)) if value is not None]
        if self.flagged is not None:
            parts.append("flagged" if self.flagged else "clean")
        for name, low, high in (("label prob of A", self.min_label_prob, self.max_label_prob),
                                ("drift", self.min_drift, self.max_drift)):
            if low is not None or high is not None:
                parts.append(f"{name} in [{low or 0:.2f}, {1 if high is None else high:.2f}]")
        if self.min_probe_prob is not None:
            parts.append(f"probe prob of A ≥ {self.min_probe_prob:.2f}")
        if self.probe_low is not None:
            parts.append("below the probe's threshold" if self.probe_low else "above the probe's threshold")
        if self.in_box is not None:
            parts.append("in the map's box ({:.2f}, {:.2f})–({:.2f}, {:.2f})".format(*self.in_box))
        return ", ".join(parts) or "every augmentation"


@dataclass(frozen=True)
class QuerySql:
    """A query as SQL: its FROM clause (one LEFT JOIN per score), WHERE clause and parameters, and the scorers
    whose scores it reads. ``extra`` adds (clause, parameters) pairs (a threshold, a set of ids)."""

    joins: str
    where: str
    params: list
    label_scorer: dict | None
    quality_scorer: dict | None

    @classmethod
    def of(cls, workspace: Workspace, query: CurationQuery, db, *, extra: Sequence[tuple[str, list]] = ()) -> QuerySql:
        label_row = latest_scorer(workspace, LABEL_KIND, query.scorer, db=db)
        quality_row = latest_scorer(workspace, QUALITY_KIND, db=db)
        label_id = label_row and label_row["id"]
        probe_row = probe_scorer(db, label_id)
        _, joins = _scored_sql(label_id, quality_row and quality_row["id"], probe_id=probe_row and probe_row["id"])
        clauses, params = scored_filters(label=query.label, prompt=query.prompt, status=query.status,
                                         max_drift=query.max_drift, min_drift=query.min_drift,
                                         min_label_prob=query.min_label_prob, max_label_prob=query.max_label_prob,
                                         flagged=query.flagged, min_probe_prob=query.min_probe_prob,
                                         probe_low=query.probe_low, in_box=query.in_box, map_scorer=label_id)
        for clause, values in extra:
            clauses.append(clause)
            params.extend(values)
        return cls(joins, " WHERE " + " AND ".join(clauses) if clauses else "", params, label_row, quality_row)

    def count(self, db) -> int:
        return db.execute(f"SELECT count(*){self.joins}{self.where}", self.params).fetchone()[0]

    def ids(self, db, order: str = "a.id", limit: int | None = None, offset: int = 0) -> list[int]:
        sql = f"SELECT a.id{self.joins}{self.where} ORDER BY {order}"
        params = list(self.params)
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [int(limit), int(offset)]
        return [r[0] for r in db.execute(sql, params)]


def matching_ids(workspace: Workspace, query: CurationQuery, *, within: Iterable[int] | None = None) -> list[int]:
    """The ids the query matches, in its sort order (only among `within`, when given)."""
    extra = []
    if within is not None:
        within = sorted({int(i) for i in within})
        extra = [(f"a.id IN ({','.join('?' * len(within))})" if within else "0", within)]
    with workspace.manifest.session() as db:
        return QuerySql.of(workspace, query, db, extra=extra).ids(db, SORTS[query.sort][1])


def filter_choices(workspace: Workspace) -> tuple[list[str], list[str]]:
    """(labels, prompts) that the workspace's augmentations have, sorted (two indexed DISTINCT queries)."""
    with workspace.manifest.session() as db:
        labels = [r[0] for r in db.execute("SELECT DISTINCT label FROM augmentations WHERE label IS NOT NULL "
                                           "ORDER BY label")]
        prompts = [r[0] for r in db.execute("SELECT DISTINCT prompt FROM augmentations WHERE prompt IS NOT NULL "
                                            "ORDER BY prompt")]
    return [str(x) for x in labels], [str(x) for x in prompts]
