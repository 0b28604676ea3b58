"""The distribution of one score over what a query matches, and the items a threshold would reject.

The scores people can plot and cut are :data:`HISTOGRAM_SCORES` (A's and Î's label probability: low is bad; drift:
high is bad). :func:`histogram` counts one of them in equal bins over the range the data spans, as many as numpy's
'auto' rule (the larger of Sturges' and Freedman–Diaconis') asks, kept within :data:`MIN_BINS`–:data:`MAX_BINS`
(label probabilities of 10,000 items that all lie in 0.30–0.36 get bins of 0.002, not one bar of 0.05), each bin
split into the items a threshold keeps and those past it; :func:`threshold_count` says how many are past it, which
is what rejecting them (``decision_plans.plan_threshold``) would change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import math

import numpy as np

from ..checks import check_int
from ..errors import BadArgumentError
from .filters import CurationQuery, QuerySql, unit_value

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["HISTOGRAM_SCORES", "MAX_BINS", "MIN_BINS", "Histogram", "HistogramScore", "bin_edges", "histogram",
           "histogram_score", "threshold_count", "threshold_sql"]

MIN_BINS, MAX_BINS = 10, 50  # the 'auto' rule's bin count is kept within these


@dataclass(frozen=True)
class HistogramScore:
    """A score the histogram can show and a threshold can cut: its words, its SQL (over the aliases of
    ``queries._scored_sql``), and which side of a threshold is rejected."""

    title: str
    sql: str
    reject_below: bool  # label probabilities: low is bad; drift: high is bad

    @property
    def side(self) -> str:
        return "below" if self.reject_below else "above"


HISTOGRAM_SCORES: dict[str, HistogramScore] = {
    "label_prob": HistogramScore("label prob of A", "pa.value", True),
    "generated_label_prob": HistogramScore("label prob of Î", "pg.value", True),
    "drift": HistogramScore("drift", "a.drift", False),
}


def histogram_score(name: str) -> HistogramScore:
    """The :data:`HISTOGRAM_SCORES` entry `name`, else BadArgumentError naming the choices."""
    if name not in HISTOGRAM_SCORES:
        raise BadArgumentError(f"score must be one of {', '.join(HISTOGRAM_SCORES)}, got {name!r}.")
    return HISTOGRAM_SCORES[name]


@dataclass(frozen=True)
class Histogram:
    """Counts of one score in equal bins (``edges``) over the data's range, split at a threshold (``past``: the
    side that would be rejected); ``missing``: matching items without the score."""

    score: str
    edges: list[float]
    kept: list[int]
    past: list[int]
    missing: int
    threshold: float | None = None

    @property
    def total(self) -> int:
        return sum(self.kept) + sum(self.past)

    @property
    def past_count(self) -> int:
        return sum(self.past)

    def describe(self) -> str:
        """'**7** of the 24 shown have label prob of A below 0.30.' (and how many have no such score)."""
        spec = HISTOGRAM_SCORES[self.score]
        missing = f" ({self.missing:,} without this score are left out)" if self.missing else ""
        return (f"**{self.past_count:,}** of the {self.total + self.missing:,} shown have {spec.title} {spec.side} "
                f"{self.threshold or 0:.2f}{missing}.")

    def action(self) -> str:
        """The words of the button that rejects them: 'Reject the 7 shown below 0.30…'."""
        return f"Reject the {self.past_count:,} shown {HISTOGRAM_SCORES[self.score].side} {self.threshold or 0:.2f}…"

    def rows(self) -> list[dict]:
        """One row per (bin, side) with a count, for a stacked bar plot: ``bin`` (its lower edge, '0.20'),
        ``count``, ``side`` ('kept' or 'rejected')."""
        out = []
        width = (self.edges[-1] - self.edges[0]) / max(1, len(self.kept))
        digits = max(2, 1 - math.floor(math.log10(width))) if width > 0 else 2  # lower edges that differ
        for i in range(len(self.kept)):
            name = f"{self.edges[i]:.{digits}f}"
            if self.kept[i] or not self.past[i]:  # every bin has a row, so the axis shows the whole range
                out.append({"bin": name, "count": self.kept[i], "side": "kept"})
            if self.past[i]:
                out.append({"bin": name, "count": self.past[i], "side": "rejected"})
        return out


def bin_edges(values: np.ndarray, bins: int | str = "auto") -> np.ndarray:
    """Equal bins over the range of `values`: `bins` of them, or with 'auto' numpy's rule (Sturges /
    Freedman–Diaconis) kept within :data:`MIN_BINS`–:data:`MAX_BINS`. No values: [0, 1]; one value: a unit-wide
    range around it (so a constant score is one bar, not a division by zero)."""
    values = np.asarray(values, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    if bins == "auto":
        auto = len(np.histogram_bin_edges(values, "auto")) - 1 if len(values) > 1 else MIN_BINS
        bins = min(MAX_BINS, max(MIN_BINS, auto))
    bins = check_int("bins", bins, minimum=1, maximum=1000)
    return np.linspace(low, high, bins + 1)


def histogram(workspace: Workspace, query: CurationQuery, score: str = "label_prob", bins: int | str = "auto",
              threshold: float | None = None) -> Histogram:
    """The distribution of `score` (:data:`HISTOGRAM_SCORES`) over what `query` matches, in equal bins over the
    range of its values (:func:`bin_edges`), each bin split into the items a threshold would reject (``past``)
    and keep. One SQL query reads the values (10,000 floats: a few milliseconds)."""
    spec = histogram_score(score)
    threshold = unit_value("threshold", threshold)
    with workspace.manifest.session() as db:
        sql = QuerySql.of(workspace, query, db)
        is_past = "0" if threshold is None else f"{spec.sql} {'<' if spec.reject_below else '>'} ?"
        rows = db.execute(f"SELECT {spec.sql}, {is_past}{sql.joins}{sql.where}",
                          [*([] if threshold is None else [threshold]), *sql.params]).fetchall()
    values = np.array([r[0] for r in rows if r[0] is not None], dtype=np.float64)
    beyond = np.array([bool(r[1]) for r in rows if r[0] is not None], dtype=bool)
    edges = bin_edges(values, bins)
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    n = len(edges) - 1
    kept = np.bincount(index[~beyond], minlength=n).tolist()
    past = np.bincount(index[beyond], minlength=n).tolist()
    return Histogram(score, [float(e) for e in edges], kept, past, len(rows) - len(values), threshold)


def threshold_sql(workspace: Workspace, query: CurationQuery, score: str, threshold: float, db) -> QuerySql:
    """`query` narrowed to the items whose `score` is past `threshold` (unscored items never are)."""
    spec = histogram_score(score)
    threshold = unit_value("threshold", threshold)
    if threshold is None:
        raise BadArgumentError("threshold must be a number in [0, 1], got None.")
    return QuerySql.of(workspace, query, db, extra=[(f"{spec.sql} {'<' if spec.reject_below else '>'} ?", [threshold])])


def threshold_count(workspace: Workspace, query: CurationQuery, score: str, threshold: float) -> int:
    """How many items `query` matches whose `score` is past `threshold` (below it for a label probability,
    above it for drift; unscored items never count): what ``decision_plans.plan_threshold`` would reject."""
    with workspace.manifest.session() as db:
        return threshold_sql(workspace, query, score, threshold, db).count(db)
