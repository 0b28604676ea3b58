"""The map in the Curate tab, without gradio: what the scatter plot draws, and the box that narrows the gallery.

The map itself is ``curation.embedding_map`` (a PCA of the label scorer's embeddings of every A, cached until the
set changes). The tab draws the points of the augmentations its filter matches, the box left aside, so that the
points a box takes are the items the gallery then shows; the box is the query's ``in_box``
(:func:`with_box`), which the page, the counted bulk decisions ("Approve all matching…") and Undo act on as on
any other filter. :func:`map_view` gives the rows (x, y, the colour, id, class, prompt), the axes' limits (those of
the whole map, so that the axes stay put while the filter changes and a drawn box keeps its place) and a line
saying what is drawn. Beyond :data:`MAX_POINTS` a seeded sample is drawn; the box still takes every point in it.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..curation import embedding_map
from ..curation.filters import CurationQuery, matching_ids
from ..curation.queries import scored_augmentations
from ..curation.scores import LABEL_KIND, latest_scorer
from ..errors import BadArgumentError

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["COLORS", "MAX_POINTS", "MapView", "box_of", "color_choices", "map_view", "with_box"]

# Chromium draws 10,000 points (Gradio's Vega-Lite plot, SVG) in about 0.6 s on 2 shared cores; beyond that a
# seeded sample of this many is drawn, so a map of 100k augmentations opens as fast
MAX_POINTS = 10_000
MAX_LEGEND = 12  # categories past the 11 most frequent are drawn as 'other' (a legend of 100 classes says nothing)
NAME_CHARS = 32  # long prompts are cut in the legend (the tooltip has them whole)
COLORS: dict[str, str] = {  # the colour dropdown: choice -> words (the plot's column: no quotes, dots, brackets)
    "class": "class", "prompt": "prompt", "status": "status", "label_prob": "label prob of A",
    "generated_label_prob": "label prob of Î", "top_prob": "top-class prob of A", "probe_prob": "probe prob of A",
    "drift": "drift", "label_rank": "label rank of A",
}
STATUS_COLORS = {"pending": "#94a3b8", "approved": "#16a34a", "rejected": "#dc2626"}
_COLUMN = {"class": "label", "prompt": "prompt", "status": "status"}  # category -> scored column


@dataclass(frozen=True)
class MapView:
    """What the plot draws: ``rows`` (:attr:`columns`: x, y, the colour named by its words, id, class, prompt),
    whether the colour is a score (``numeric``), the axes' limits, and the counts :meth:`describe` says."""

    rows: list[dict]
    color: str
    numeric: bool
    x_lim: tuple[float, float] | None
    y_lim: tuple[float, float] | None
    matching: int  # points of the filter (the box left aside)
    embedded: int  # points of the whole map
    box: tuple[float, float, float, float] | None = None
    in_box: int = 0  # items the filter and the box match: what the gallery shows
    note: str = ""  # set when there is no map: how to get one

    @property
    def color_column(self) -> str:
        return COLORS[self.color]

    @property
    def columns(self) -> list[str]:
        return ["x", "y", self.color_column, "id", *(c for c in ("class", "prompt") if c != self.color_column)]

    def describe(self) -> str:
        if self.note:
            return self.note
        drawn = len(self.rows)
        sample = (f" (a sample of {drawn:,} is drawn; a box takes every point in it)"
                  if drawn < self.matching else "")
        text = (f"**{self.matching:,}** of the {self.embedded:,} augmentations on the map match the filter"
                f"{sample}. Coloured by {COLORS[self.color]}. Drag a box over points to show only those.")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            text += (f"\n\n**Box** x {x0:.3g}…{x1:.3g}, y {y0:.3g}…{y1:.3g}: **{self.in_box:,}** shown. "
                     "*Approve / Reject all matching…* decide exactly these (counted, then confirmed; Undo reverts).")
        return text


def color_choices(workspace: Workspace) -> list[tuple[str, str]]:
    """(words, key) of what the map can be coloured by: class, prompt, status, then every score present."""
    rows = scored_augmentations(workspace)
    present = [m for m in embedding_map.NUMERIC if any(r[m] is not None for r in rows)]
    return [(COLORS[k], k) for k in (*_COLUMN, *present)]


def box_of(x0, y0, x1, y1) -> tuple[float, float, float, float]:
    """Four numbers as a box (x0 ≤ x1, y0 ≤ y1), else BadArgumentError saying how to make one."""
    try:
        values = [float(v) for v in (x0, y0, x1, y1)]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise BadArgumentError("no box: drag a box over the map's points, or type x0, y0, x1, y1 (the map's "
                               "axes) and press Show the box.")
    x0, y0, x1, y1 = values
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def with_box(query: CurationQuery | None, box) -> CurationQuery:
    """`query` narrowed to the map's `box` (x0, y0, x1, y1), or with no box when `box` is None."""
    query = query or CurationQuery()
    return dataclasses.replace(query, in_box=None if box is None else box_of(*box))


def _limits(values: np.ndarray) -> tuple[float, float]:
    low, high = (float(values.min()), float(values.max())) if len(values) else (-1.0, 1.0)
    pad = (high - low) * 0.04 or 1.0
    return round(low - pad, 4), round(high + pad, 4)


def _category(value, counts: Counter) -> str:
    if value is None:
        return "–"
    kept = {name for name, _ in counts.most_common(MAX_LEGEND - 1)} if len(counts) > MAX_LEGEND else counts
    name = str(value)
    if name not in kept:
        return "other"
    return name if len(name) <= NAME_CHARS else name[:NAME_CHARS - 1] + "…"


def map_view(workspace: Workspace, query: CurationQuery | None = None, color: str = "class", *,
             max_points: int = MAX_POINTS, seed: int = 0) -> MapView:
    """The points of the augmentations `query` matches (its box left aside), coloured by `color` (a key of
    :data:`COLORS`), at most `max_points` (a seeded sample beyond); with the box's count when the query has one.
    A workspace without embeddings gives an empty view whose note says how to get them."""
    if color not in COLORS:
        raise BadArgumentError(f"colour must be one of {', '.join(COLORS)}, got {color!r}.")
    query = query or CurationQuery()
    numeric = color not in _COLUMN
    label_row = latest_scorer(workspace, LABEL_KIND, query.scorer)
    points = embedding_map.map_points(workspace, query.scorer) if label_row is not None else None
    if points is None or not len(points.ids):
        note = ("No map yet: this workspace's augmentations have no image embeddings. Run `python -m "
                "diffusemix_core score --workspace <its folder>` (the CLIP scorer keeps them), then Refresh.")
        return MapView([], color, numeric, None, None, 0, 0, note=note)
    wanted = set(matching_ids(workspace, dataclasses.replace(query, in_box=None)))
    keep = np.array([int(i) in wanted for i in points.ids], dtype=bool)
    ids, xy = points.ids[keep], points.xy[keep]
    if len(ids) > max_points:
        chosen = np.sort(np.random.default_rng(seed).choice(len(ids), max_points, replace=False))
        ids, xy = ids[chosen], xy[chosen]
    scored = {r["id"]: r for r in scored_augmentations(workspace, scorer=points.scorer["id"],
                                                       ids=[int(i) for i in ids])} if len(ids) else {}
    counts = Counter(scored[int(i)][_COLUMN[color]] for i in ids if int(i) in scored) if not numeric else Counter()
    rows = []
    for aug_id, (x, y) in zip(ids, xy):
        row = scored.get(int(aug_id), {})
        value = row.get(color) if numeric else _category(row.get(_COLUMN[color]), counts)
        rows.append({"class": str(row.get("label")), "prompt": str(row.get("prompt")), "x": float(x), "y": float(y),
                     COLORS[color]: (math.nan if value is None else float(value)) if numeric else value,
                     "id": int(aug_id)})
    in_box = len(matching_ids(workspace, query)) if query.in_box is not None else 0
    return MapView(rows, color, numeric, _limits(points.xy[:, 0]), _limits(points.xy[:, 1]), int(keep.sum()),
                   len(points.ids), query.in_box, in_box)
