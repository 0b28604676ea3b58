"""Curating a workspace page by page: what the app's Curate tab shows and changes, testable without a browser.

The story, top to bottom:

1. **a query** (:class:`CurationQuery`): filters on label, prompt, status, flags and score ranges, and a sort
   (:data:`SORTS`), over the scores of ``scores.py`` (the latest label scorer and quality flags);
2. **a page** (:func:`page`): one page of rows (``score_queries.SCORED_COLUMNS``) in order, their previews (the
   ``workspace.thumbnails`` of A, made by the bulk run or on first view) and captions that carry the scores, plus
   how many match. Only the page's rows are read: 10,000 augmentations page as fast as 100;
3. **a selection** (:class:`Selection`): a value with explicit add, remove, toggle and clear; viewing an item
   never changes it;
4. **a distribution** (:func:`histogram`) of one score (:data:`SCORES`) over what the query matches, and the
   items past a threshold (:func:`threshold_count`);
5. **bulk decisions in two steps** (:class:`BulkPlan`): :func:`plan_selected`, :func:`plan_matching` and
   :func:`plan_threshold` say how many items they would change, and change nothing; :meth:`BulkPlan.apply`
   records the decision (``decisions.py``), on exactly the ids that were counted;
6. **one item in full** (:func:`detail`): every score of A and Î, the scorer (and whether it is untrained) and
   the decision history; **the prompt report** (:func:`report_view`) as a table and a plot; the dry run of the
   ``review --auto`` rules (:func:`auto_review_rows`).

Nothing here imports Gradio: ``app.py`` wires these to its widgets.

Longer than the house's ~450 lines on purpose: it is the whole Curate tab's logic (queries, pages, selection,
histogram, counted plans, detail, report view), kept together so app.py holds none of it and one test file covers
it.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import queries as score_queries

from . import scores
from ..checks import check_int
from ..workspace.decisions import Decision, history
from ..errors import BadArgumentError, WorkspaceError
from ..workspace.manifest import Manifest, check_status
from ..engine.test_models import UNTRAINED_SCORER_NOTE

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = [
    "ALL",
    "BulkPlan",
    "CurationQuery",
    "DEFAULT_PER_PAGE",
    "Detail",
    "Histogram",
    "Page",
    "REPORT_HEADERS",
    "REPORT_METRICS",
    "ReportView",
    "SCORES",
    "SORTS",
    "Selection",
    "TABLE_COLUMNS",
    "auto_review_rows",
    "caption",
    "detail",
    "filter_choices",
    "histogram",
    "matching_ids",
    "page",
    "plan_matching",
    "plan_selected",
    "plan_threshold",
    "report_view",
    "marked_preview",
    "served_copies",
    "threshold_count",
]

ALL = "all"  # the form value that means "no filter"
DEFAULT_PER_PAGE = 48
FLAG_FILTERS = {"all": None, "flagged": True, "clean": False}

# sort key -> (words for people, ORDER BY over the aliases of ``score_queries._scored_sql``: a = augmentations,
# pa / pg = label probability of A / Î, fa / fg = flags of A / Î)
SORTS: dict[str, tuple[str, str]] = {
    "newest": ("newest first", "a.id DESC"),
    "oldest": ("oldest first", "a.id"),
    "drift": ("drift, highest first", "a.drift IS NULL, a.drift DESC, a.id"),
    "label_prob": ("label prob of A, lowest first", "pa.value IS NULL, pa.value, a.id"),
    "generated_label_prob": ("label prob of Î, lowest first", "pg.value IS NULL, pg.value, a.id"),
    "flags": ("flags, flagged first", "fa.value IS NULL AND fg.value IS NULL, "
                                      "coalesce(fa.value, 0) + coalesce(fg.value, 0) DESC, a.id"),
    "label": ("label (A to Z)", "a.label, a.id"),
    "prompt": ("prompt (A to Z)", "a.prompt, a.id"),
    "status": ("status", "a.status, a.id"),
}


@dataclass(frozen=True)
class ScoreSpec:
    """A score people can plot and threshold: its words, its SQL, and which side of a threshold is rejected."""

    title: str
    sql: str
    reject_below: bool  # label probabilities: low is bad; drift: high is bad

    @property
    def side(self) -> str:
        return "below" if self.reject_below else "above"


SCORES: dict[str, ScoreSpec] = {
    "label_prob": ScoreSpec("label prob of A", "pa.value", True),
    "generated_label_prob": ScoreSpec("label prob of Î", "pg.value", True),
    "drift": ScoreSpec("drift", "a.drift", False),
}


def _score(name: str) -> ScoreSpec:
    if name not in SCORES:
        raise BadArgumentError(f"score must be one of {', '.join(SCORES)}, got {name!r}.")
    return SCORES[name]


def _unit(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise BadArgumentError(f"{name} must be in [0, 1], got {value}.")
    return value


# ------------------------------------------------------------------------------------------------ the query
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

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise BadArgumentError(f"sort must be one of {', '.join(SORTS)}, got {self.sort!r}.")
        if self.status is not None:
            check_status(self.status)
        for name in ("min_label_prob", "max_label_prob", "min_drift", "max_drift"):
            _unit(name, getattr(self, name))

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
        return ", ".join(parts) or "every augmentation"


@dataclass(frozen=True)
class _Sql:
    """A query's FROM clause (one LEFT JOIN per score), WHERE clause and parameters, and the scorers used."""

    joins: str
    where: str
    params: list
    label_scorer: dict | None
    quality_scorer: dict | None

    @classmethod
    def of(cls, workspace: Workspace, query: CurationQuery, db, *, extra: Sequence[tuple[str, list]] = ()) -> _Sql:
        label_row = scores.latest_scorer(workspace, scores.LABEL_KIND, query.scorer, db=db)
        quality_row = scores.latest_scorer(workspace, scores.QUALITY_KIND, db=db)
        _, joins = score_queries._scored_sql(label_row and label_row["id"], quality_row and quality_row["id"])
        where, params = Manifest.where(label=query.label, prompt=query.prompt, status=query.status,
                                       max_drift=query.max_drift, min_drift=query.min_drift)
        clauses = [where[len(" WHERE "):]] if where else []
        for clause, value in (("pa.value >= ?", query.min_label_prob), ("pa.value <= ?", query.max_label_prob)):
            if value is not None:
                clauses.append(clause)
                params.append(float(value))
        if query.flagged is not None:
            clauses.append(f"({score_queries._FLAGGED}) = ?")
            params.append(int(query.flagged))
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
        return _Sql.of(workspace, query, db, extra=extra).ids(db, SORTS[query.sort][1])


def filter_choices(workspace: Workspace) -> tuple[list[str], list[str]]:
    """(labels, prompts) that the workspace's augmentations have, sorted (two indexed DISTINCT queries)."""
    with workspace.manifest.session() as db:
        labels = [r[0] for r in db.execute("SELECT DISTINCT label FROM augmentations WHERE label IS NOT NULL "
                                           "ORDER BY label")]
        prompts = [r[0] for r in db.execute("SELECT DISTINCT prompt FROM augmentations WHERE prompt IS NOT NULL "
                                            "ORDER BY prompt")]
    return [str(x) for x in labels], [str(x) for x in prompts]


# ------------------------------------------------------------------------------------------------ the selection
@dataclass(frozen=True)
class Selection:
    """The augmentation ids a person picked: a value; every change returns a new selection."""

    ids: frozenset[int] = frozenset()

    def add(self, *ids: int) -> Selection:
        return Selection(self.ids | {int(i) for i in ids})

    def remove(self, *ids: int) -> Selection:
        return Selection(self.ids - {int(i) for i in ids})

    def toggle(self, aug_id: int) -> Selection:
        return self.remove(aug_id) if int(aug_id) in self.ids else self.add(aug_id)

    def clear(self) -> Selection:
        return Selection()

    def __contains__(self, aug_id: object) -> bool:
        return isinstance(aug_id, int) and aug_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        return iter(sorted(self.ids))

    def describe(self, limit: int = 12) -> str:
        """'3 selected: #4, #7, #9' (or 'Nothing selected.')."""
        if not self.ids:
            return "Nothing selected."
        ids = sorted(self.ids)
        shown = ", ".join(f"#{i}" for i in ids[:limit]) + (f", … {len(ids) - limit} more" if len(ids) > limit else "")
        return f"{len(ids)} selected: {shown}."


# ------------------------------------------------------------------------------------------------ a page
TABLE_COLUMNS = ["✓", "id", "status", "label", "prompt", "p(A)", "rank A", "p(Î)", "rank Î", "drift", "flags A",
                 "flags Î"]


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _rank(value: float | None) -> str:
    return "–" if value is None else str(int(value))


def _flag_text(value: str | None, clean: str = "") -> str:
    """Flags as shown: '–' when not checked, `clean` when checked and clean."""
    return "–" if value is None else (value or clean)


def _flags(row: dict) -> str:
    names = [f for f in (row.get("flags") or "").split(",") + (row.get("generated_flags") or "").split(",") if f]
    return ", ".join(dict.fromkeys(names))


def caption(row: dict, selected: bool = False) -> str:
    """A tile's caption, scores first: '✓ #12 pending · p 0.52 · drift 0.31 · ⚑ blank · cats · autumn'."""
    parts = [f"{'✓ ' if selected else ''}#{row['id']} {row.get('status', '')}",
             f"p {_num(row.get('label_prob'))}" + ("*" if row.get("untrained") and row.get("label_prob") is not None
                                                   else ""),
             f"drift {_num(row.get('drift'))}"]
    flags = _flags(row)
    if flags:
        parts.append(f"⚑ {flags}")
    parts += [str(row.get("label", "")), str(row.get("prompt", ""))]
    return " · ".join(parts)


@dataclass(frozen=True)
class Page:
    """One page of a query: rows (``score_queries.SCORED_COLUMNS``) in order, their previews, and how many match."""

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
                 _num(r["label_prob"], 3), _rank(r["label_rank"]), _num(r["generated_label_prob"], 3),
                 _rank(r["generated_label_rank"]), _num(r["drift"], 3), _flag_text(r["flags"]),
                 _flag_text(r["generated_flags"])] for r in self.rows]

    def describe(self) -> str:
        """'Items 49–96 of 10,000 (page 2 of 209) · label cats, status pending' (+ the untrained-scorer note)."""
        if not self.total:
            text = f"Nothing matches ({self.query.describe()})."
        else:
            first = self.number * self.per_page + 1
            text = (f"Items {first}–{first + len(self.rows) - 1} of {self.total:,} (page {self.number + 1} of "
                    f"{self.pages}) · {self.query.describe()} · sorted by {SORTS[self.query.sort][0]}.")
        return text + scorer_note(self.label_scorer)


def scorer_note(label_scorer: dict | None) -> str:
    """' Label scores (p) by M (scorer #N).' with the untrained-scorer warning; a hint when there are none."""
    if label_scorer is None:
        return " No label scores yet (`python -m diffusemix_core score --workspace W` adds them)."
    text = f" Label scores (p) by `{label_scorer['model']}` (scorer #{label_scorer['id']})."
    if label_scorer.get("is_test_model"):
        text += f" ⚠️ *{UNTRAINED_SCORER_NOTE}.*"
    return text


def page(workspace: Workspace, query: CurationQuery, number: int = 0, per_page: int = DEFAULT_PER_PAGE) -> Page:
    """Page `number` (0-based; past the end gives the last page) of what `query` matches: only its rows are read,
    its previews are made if missing (``workspace.thumbnails``)."""
    per_page = check_int("per_page", per_page, minimum=1, maximum=1000)
    number = max(0, int(number))
    with workspace.manifest.session() as db:
        sql = _Sql.of(workspace, query, db)
        total = sql.count(db)
        number = min(number, max(0, math.ceil(total / per_page) - 1))
        ids = sql.ids(db, SORTS[query.sort][1], per_page, number * per_page)
    label_id = sql.label_scorer and sql.label_scorer["id"]
    by_id = {r["id"]: r for r in score_queries.scored_augmentations(workspace, scorer=label_id, ids=ids)} if ids else {}
    rows = [by_id[i] for i in ids if i in by_id]
    stored = {r["id"]: r for r in workspace.manifest.list_augmentations(ids=ids)} if ids else {}
    thumbnails = [workspace.thumbnails.for_row(workspace, stored[r["id"]]) for r in rows]
    return Page(query=query, rows=rows, thumbnails=thumbnails, total=total, number=number, per_page=per_page,
                label_scorer=sql.label_scorer)


SELECTED_COLOUR = (22, 163, 74)  # the frame and tick drawn on a selected item's served preview


def served_copies(paths: Sequence[Path], folder: Path, selected: Sequence[bool] | None = None) -> list[str]:
    """Copies of previews in `folder` (one a web server may serve; the workspace itself is never served), hard
    links where the file system allows; a `selected` one gets a green frame and tick drawn on it, so the mark is
    in the picture itself. Previews are named by content, so each copy is made once."""
    folder = Path(folder)
    selected = list(selected or [False] * len(paths))
    out = []
    for path, mark in zip(paths, selected):
        path = Path(path)
        target = folder / (f"{path.stem}-selected.png" if mark else path.name)
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            temp = folder / f".tmp-{os.getpid()}-{threading.get_ident()}-{target.name}"
            if mark:
                marked_preview(path, temp)
            else:
                try:
                    os.link(path, temp)
                except OSError:
                    shutil.copyfile(path, temp)
            os.replace(temp, target)
        out.append(str(target))
    return out


def marked_preview(path: Path, target: Path) -> None:
    """The preview at `path` with a frame and a tick in the top-right corner, written to `target` as PNG."""
    from PIL import Image, ImageDraw

    with Image.open(path) as source:
        image = source.convert("RGB")
    draw = ImageDraw.Draw(image)
    w, h = image.size
    draw.rectangle([0, 0, w - 1, h - 1], outline=SELECTED_COLOUR, width=max(4, min(w, h) // 12))
    box = max(16, min(w, h) // 3)
    draw.rectangle([w - box, 0, w - 1, box], fill=SELECTED_COLOUR)
    tick = [(w - box + box * 0.2, box * 0.52), (w - box + box * 0.42, box * 0.74), (w - box + box * 0.82, box * 0.28)]
    draw.line(tick, fill="white", width=max(3, box // 7), joint="curve")
    image.save(target, format="PNG", compress_level=1)


# ------------------------------------------------------------------------------------------------ distribution
@dataclass(frozen=True)
class Histogram:
    """Counts of one score in ``bins`` equal bins over [0, 1], split at a threshold (``past``: the side that
    would be rejected); ``missing``: matching items without the score."""

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
        spec = SCORES[self.score]
        missing = f" ({self.missing:,} without this score are left out)" if self.missing else ""
        return (f"**{self.past_count:,}** of the {self.total + self.missing:,} shown have {spec.title} {spec.side} "
                f"{self.threshold or 0:.2f}{missing}.")

    def action(self) -> str:
        """The words of the button that rejects them: 'Reject the 7 shown below 0.30…'."""
        return f"Reject the {self.past_count:,} shown {SCORES[self.score].side} {self.threshold or 0:.2f}…"

    def rows(self) -> list[dict]:
        """One row per (bin, side) with a count, for a stacked bar plot: ``bin`` (its lower edge, '0.20'),
        ``count``, ``side`` ('kept' or 'rejected')."""
        out = []
        for i in range(len(self.kept)):
            name = f"{self.edges[i]:.2f}"
            if self.kept[i] or not self.past[i]:  # every bin has a row, so the axis shows all of [0, 1]
                out.append({"bin": name, "count": self.kept[i], "side": "kept"})
            if self.past[i]:
                out.append({"bin": name, "count": self.past[i], "side": "rejected"})
        return out


def histogram(workspace: Workspace, query: CurationQuery, score: str = "label_prob", bins: int = 20,
              threshold: float | None = None) -> Histogram:
    """The distribution of `score` (:data:`SCORES`) over what `query` matches (one grouped SQL query), each bin
    split into the items a threshold would reject (``past``) and keep."""
    spec = _score(score)
    bins = check_int("bins", bins, minimum=1, maximum=1000)
    threshold = _unit("threshold", threshold)
    edges = [i / bins for i in range(bins + 1)]
    kept, past = [0] * bins, [0] * bins
    with workspace.manifest.session() as db:
        sql = _Sql.of(workspace, query, db)
        is_past = "0" if threshold is None else f"{spec.sql} {'<' if spec.reject_below else '>'} ?"
        rows = db.execute(
            f"SELECT {spec.sql} IS NULL, min(CAST({spec.sql} * ? AS INTEGER), ?), {is_past}, count(*)"
            f"{sql.joins}{sql.where} GROUP BY 1, 2, 3",
            [bins, bins - 1, *([] if threshold is None else [threshold]), *sql.params]).fetchall()
    missing = 0
    for unscored, index, beyond, n in rows:
        if unscored:
            missing += n
            continue
        (past if beyond else kept)[max(0, int(index))] += n
    return Histogram(score, edges, kept, past, missing, threshold)


def _threshold_sql(workspace: Workspace, query: CurationQuery, score: str, threshold: float, db) -> _Sql:
    spec = _score(score)
    threshold = _unit("threshold", threshold)
    if threshold is None:
        raise BadArgumentError("threshold must be a number in [0, 1], got None.")
    return _Sql.of(workspace, query, db, extra=[(f"{spec.sql} {'<' if spec.reject_below else '>'} ?", [threshold])])


def threshold_count(workspace: Workspace, query: CurationQuery, score: str, threshold: float) -> int:
    """How many items `query` matches whose `score` is past `threshold` (below it for a label probability,
    above it for drift; unscored items never count): what :func:`plan_threshold` would reject."""
    with workspace.manifest.session() as db:
        return _threshold_sql(workspace, query, score, threshold, db).count(db)


# ------------------------------------------------------------------------------------------------ bulk decisions
@dataclass(frozen=True)
class BulkPlan:
    """A decision counted before it is made: `status` for exactly `ids`; nothing changes until :meth:`apply`."""

    status: str
    ids: tuple[int, ...]
    what: str  # 'from the selection', 'matching the filter (…)', 'shown with label prob of A below 0.20'
    left_out: int = 0  # selected items the filter no longer shows: left alone
    origin: str = "app"

    @property
    def count(self) -> int:
        return len(self.ids)

    def question(self) -> str:
        verb = {"approved": "Approve", "rejected": "Reject", "pending": "Reset to pending"}[self.status]
        noun = "augmentation" if self.count == 1 else "augmentations"
        text = f"{verb} {self.count:,} {noun} {self.what}?"
        if self.left_out:
            text += f" ({self.left_out} selected no longer match the filter and are left alone.)"
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


def plan_selected(workspace: Workspace, query: CurationQuery, selection: Selection, status: str) -> BulkPlan:
    """`status` for the selected items that the query still matches (the others are counted and left alone)."""
    status = check_status(status)
    if not len(selection):
        raise BadArgumentError("nothing is selected: view an item and press 'Select', or 'Select page'.")
    ids = matching_ids(workspace, query, within=selection.ids)
    return BulkPlan(status, tuple(ids), "from the selection", left_out=len(selection) - len(ids))


def plan_matching(workspace: Workspace, query: CurationQuery, status: str) -> BulkPlan:
    """`status` for every item the query matches (all pages)."""
    status = check_status(status)
    return BulkPlan(status, tuple(matching_ids(workspace, query)), f"matching the filter ({query.describe()})")


def plan_threshold(workspace: Workspace, query: CurationQuery, score: str, threshold: float) -> BulkPlan:
    """Reject the items the query matches whose `score` is past `threshold` (:func:`threshold_count` of them)."""
    spec = _score(score)
    with workspace.manifest.session() as db:
        ids = _threshold_sql(workspace, query, score, threshold, db).ids(db)
    return BulkPlan("rejected", tuple(ids), f"shown with {spec.title} {spec.side} {float(threshold):.2f}")


# ------------------------------------------------------------------------------------------------ one item
@dataclass(frozen=True)
class Detail:
    """One augmentation in full: its scored row, its manifest row, the scorers and its decision history."""

    row: dict  # score_queries.SCORED_COLUMNS
    stored: dict  # Manifest.get_augmentation
    label_scorer: dict | None
    quality_scorer: dict | None
    history: list[dict] = field(default_factory=list)

    @property
    def untrained(self) -> bool:
        return bool(self.label_scorer and self.label_scorer["is_test_model"])

    def summary(self) -> str:
        """Markdown: what A is made of, its status, and whose scores these are."""
        r, s = self.row, self.stored
        text = (f"**#{r['id']}** · label **{r['label']}** · prompt **{r['prompt']}** · mask {r['mask']} · "
                f"fractal {r['fractal']} · λ {float(r['lam']):.2f} · seed {s['seed']} · "
                f"status **{r['status']}** · source `{s['source_path']}` · in Explore: `ws-{r['id']}`.")
        if s.get("is_test_model"):
            text += " Made by an untrained test model."
        text += scorer_note(self.label_scorer)
        if self.quality_scorer is None:
            text += " No quality flags yet."
        return text

    def score_rows(self) -> list[list[str]]:
        """[score, A, Î] rows: label probability and rank, CLIP's top class, flags, drift."""
        r = self.row

        return [
            ["label probability", _num(r["label_prob"], 3), _num(r["generated_label_prob"], 3)],
            ["label rank (1 = top)", _rank(r["label_rank"]), _rank(r["generated_label_rank"])],
            ["CLIP's top class", r["top_class"] or "–", r["generated_top_class"] or "–"],
            ["flags", _flag_text(r["flags"], "none"), _flag_text(r["generated_flags"], "none")],
            ["drift of Î from I", "", _num(r["drift"], 3)],
        ]

    def history_rows(self) -> list[list]:
        """[when (UTC, to the minute), status set, previous status, origin, bulk] per decision, oldest first."""
        return [[h["created_at"][:16].replace("T", " "), h["status"], h["previous_status"], h["origin"],
                 "yes" if h["bulk"] else "no"] for h in self.history]


HISTORY_COLUMNS = ["when", "status", "previous", "origin", "bulk"]
DETAIL_COLUMNS = ["score", "A", "Î"]


def detail(workspace: Workspace, aug_id: int, *, scorer: str | int | None = None) -> Detail:
    """Every score of one augmentation (A and Î), its scorers and its decision history."""
    aug_id = check_int("augmentation id", aug_id, minimum=1)
    rows = score_queries.scored_augmentations(workspace, scorer=scorer, ids=[aug_id])
    if not rows:
        raise WorkspaceError(f"no augmentation #{aug_id} in this workspace; pick one from the gallery.")
    return Detail(row=rows[0], stored=workspace.manifest.get_augmentation(aug_id),
                  label_scorer=scores.latest_scorer(workspace, scores.LABEL_KIND, scorer),
                  quality_scorer=scores.latest_scorer(workspace, scores.QUALITY_KIND),
                  history=history(workspace.manifest, aug_id))


# ------------------------------------------------------------------------------------------------ review --auto
def auto_review_rows(plan: score_queries.AutoPlan) -> tuple[str, list[list]]:
    """The dry run of ``review --auto`` in words and as [by, name, would reject] rows (per rule, label, prompt)."""
    n = len(plan.reject)
    text = (f"Would reject {n:,} of {plan.pending:,} pending augmentation(s)"
            + (f"; {plan.unscored:,} could not be judged (a score is missing) and stay pending" if plan.unscored
               else "") + ". Nothing changes until you apply.")
    if plan.scorer is not None and plan.scorer.get("is_test_model"):
        text += f" ⚠️ *{UNTRAINED_SCORER_NOTE}.*"
    rows = [["rule", name, count] for name, count in plan.by_rule().items()]
    rows += [["label", name, count] for name, count in plan.counts("label").items()]
    rows += [["prompt", name, count] for name, count in plan.counts("prompt").items()]
    return text, rows


# ------------------------------------------------------------------------------------------------ the report
REPORT_METRICS: dict[str, str] = {
    "mean_label_prob": "mean label prob of A",
    "mean_generated_label_prob": "mean label prob of Î",
    "top1_share": "share with the true class on top",
    "flagged_share": "flagged share",
    "human_approval_rate": "people's approval rate",
    "mean_drift": "mean drift",
}


REPORT_HEADERS: dict[str, str] = {  # the report's columns as the app's table shows them
    "prompt": "prompt", "label": "class", "count": "count", "scored": "scored", "mean_label_prob": "p(A) mean",
    "mean_generated_label_prob": "p(Î) mean", "top1_share": "top-1 share", "mean_drift": "drift mean",
    "flagged_share": "flagged share", "human_approved": "approved", "human_rejected": "rejected",
    "human_approval_rate": "approval rate", "scorer": "scorer", "untrained": "untrained scorer",
}


@dataclass(frozen=True)
class ReportView:
    """The prompt report as a table (``score_queries.REPORT_COLUMNS`` but the scorer's name, which the note gives; numbers
    rounded; :attr:`headers` names them for people) and as bars of one metric."""

    columns: list[str]
    rows: list[list]
    bars: list[dict]  # {'prompt', 'value', 'label'}: `metric` per prompt (of one class, or all)
    metric: str
    note: str
    untrained: bool = False  # the label scores come from an untrained test scorer: say so with them

    @property
    def headers(self) -> list[str]:
        return [REPORT_HEADERS[c] for c in self.columns]


def report_view(workspace: Workspace, *, by_class: bool = False, metric: str = "mean_label_prob",
                label: str | None = None) -> ReportView:
    """``score_queries.prompt_report`` for people: the table (per prompt, or per prompt and class) and the bars of
    `metric` per prompt over every class or one `label`; the note says whose scores these are."""
    if metric not in REPORT_METRICS:
        raise BadArgumentError(f"metric must be one of {', '.join(REPORT_METRICS)}, got {metric!r}.")
    label = None if label in (None, "", ALL) else label
    table = score_queries.prompt_report(workspace, by_class=by_class)
    if label is None:
        plotted = score_queries.prompt_report(workspace) if by_class else table
    else:
        plotted = [r for r in (table if by_class else score_queries.prompt_report(workspace, by_class=True))
                   if r["label"] == label]
    bars = [{"prompt": str(r["prompt"]), "value": round(float(r[metric]), 4), "label": label or ALL}
            for r in plotted if r[metric] is not None]
    columns = [c for c in score_queries.REPORT_COLUMNS if (by_class or c != "label") and c != "scorer"]  # in the note
    rows = [[(round(r[c], 3) if isinstance(r[c], float) else ("–" if r[c] is None else r[c])) for c in columns]
            for r in table]
    scorer = scores.latest_scorer(workspace, scores.LABEL_KIND)
    note = scorer_note(scorer).strip() if table else "No augmentations yet: run a dataset first."
    return ReportView(columns, rows, bars, metric, note, bool(scorer and scorer["is_test_model"]))
