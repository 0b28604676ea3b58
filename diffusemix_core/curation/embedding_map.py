"""The map: every augmentation A as a point in 2-D, from the label scorer's stored embeddings (``embeddings.py``),
so that clusters of bad outputs are seen at a glance and taken in one gesture (a box).

Projection: scikit-learn's PCA (2 components, randomized solver, seeded). Chosen by measurement on 2 shared CPU
cores (``bench/curate.py``): PCA takes about 2 s at 10k and 5 s at 100k points, is deterministic and needs nothing
beyond scikit-learn (the probe's); UMAP (umap-learn 0.5.12, pulls numba and llvmlite) took 77 s at 10k including
its JIT compile, so minutes at 100k, and t-SNE is slower still: too slow to recompute whenever a run adds images.
UMAP draws tighter clusters; it can be added as an option later.

Cache: the coordinates are kept in ``map_points`` per label scorer, with a hash of the embedded augmentations' ids
in ``meta`` (``map:<scorer id>``); they are recomputed only when that set changes. The coordinates are the ones the
PNG's axes show and ``review --in-box x0,y0,x1,y1`` selects on (``queries.scored_filters(in_box=...)``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadArgumentError
from ..workspace.manifest import write
from .embeddings import read_embeddings
from .queries import scored_augmentations
from .scores import AUGMENTATION, LABEL_KIND, latest_scorer

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["CATEGORIES", "MapPoints", "color_choices", "draw_map", "map_points", "map_rows", "parse_box"]

METHOD = "pca"
CATEGORIES = {"class": "label", "prompt": "prompt", "status": "status"}  # colour choice -> scored column
NUMERIC = ("label_prob", "generated_label_prob", "top_prob", "probe_prob", "drift", "label_rank")
_META = "map:"


@dataclass(frozen=True)
class MapPoints:
    """The map of one label scorer: augmentation ids and their (x, y); ``cached``: read, not computed now."""

    scorer: dict
    ids: np.ndarray
    xy: np.ndarray
    cached: bool


def parse_box(text: str) -> tuple[float, float, float, float]:
    """'x0,y0,x1,y1' -> four floats (BadArgumentError with an example otherwise)."""
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise BadArgumentError(f"Bad box {text!r}: pass four numbers x0,y0,x1,y1 in the map's coordinates "
                               "(the axes of `map --out map.png`), e.g. --in-box=-0.2,-0.1,0.3,0.4 (with '=' when it starts with a minus).")
    return values


def _project(vectors: np.ndarray) -> np.ndarray:
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2))
    from sklearn.decomposition import PCA

    xy = PCA(n_components=2, svd_solver="randomized", random_state=0).fit_transform(vectors.astype(np.float32))
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    return np.round(xy.astype(np.float64), 5)


def map_points(workspace: Workspace, scorer: str | int | None = None) -> MapPoints:
    """The 2-D map of the embedded augmentations (latest label scorer, or `scorer`), from the cache when the set
    of embedded augmentations is unchanged, else projected and cached."""
    label_row = latest_scorer(workspace, LABEL_KIND, scorer)
    if label_row is None:
        raise BadArgumentError(f"'{workspace.path}' has no embeddings yet; run `python -m diffusemix_core score "
                               f"--workspace {workspace.path}` first (a CLIP scorer keeps them).")
    sid = label_row["id"]
    with workspace.manifest.session() as db:
        ids = [r[0] for r in db.execute("SELECT target_id FROM embeddings WHERE scorer_id = ? AND target = ? "
                                        "ORDER BY target_id", [sid, AUGMENTATION])]
        key = hashlib.sha256((METHOD + ",".join(map(str, ids))).encode()).hexdigest()
        stored = db.execute("SELECT value FROM meta WHERE key = ?", [f"{_META}{sid}"]).fetchone()
        if stored and stored[0] == key:
            rows = db.execute("SELECT augmentation_id, x, y FROM map_points WHERE scorer_id = ? "
                              "ORDER BY augmentation_id", [sid]).fetchall()
            return MapPoints(label_row, np.array([r[0] for r in rows], dtype=np.int64),
                             np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 2), True)
        got, vectors = read_embeddings(workspace, sid, AUGMENTATION, db=db)
        xy = _project(vectors)
        with write(db):
            db.execute("DELETE FROM map_points WHERE scorer_id = ?", [sid])
            db.conn.executemany("INSERT INTO map_points (scorer_id, augmentation_id, x, y) VALUES (?, ?, ?, ?)",
                                [(sid, int(i), float(x), float(y)) for i, (x, y) in zip(got, xy)])
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [f"{_META}{sid}", key])
    return MapPoints(label_row, got, xy, False)


def color_choices() -> list[str]:
    """What the map can be coloured by: class, prompt, status, then every score."""
    return [*CATEGORIES, *NUMERIC]


def map_rows(workspace: Workspace, color: str = "class", scorer: str | int | None = None) -> list[dict]:
    """One row per point: ``id``, ``x``, ``y`` and ``color`` (the category's text, or the score; None: missing)."""
    if color not in color_choices():
        raise BadArgumentError(f"--color must be one of {', '.join(color_choices())}, got {color!r}.")
    points = map_points(workspace, scorer)
    scored = {r["id"]: r for r in scored_augmentations(workspace, scorer=points.scorer["id"])}
    column = CATEGORIES.get(color, color)
    return [{"id": int(i), "x": float(x), "y": float(y), "color": scored.get(int(i), {}).get(column)}
            for i, (x, y) in zip(points.ids, points.xy)]


def draw_map(workspace: Workspace, out: str | Path, color: str = "class", scorer: str | int | None = None,
             *, size: tuple[float, float] = (7.0, 6.0), dpi: int = 110) -> tuple[Path, int]:
    """Write the map as a PNG at `out` (matplotlib, no display): (its path, how many points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = map_rows(workspace, color, scorer)
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    x = np.array([r["x"] for r in rows])
    y = np.array([r["y"] for r in rows])
    if color in CATEGORIES:
        names = sorted({str(r["color"]) for r in rows})
        cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
        for k, name in enumerate(names):
            mine = np.array([str(r["color"]) == name for r in rows], dtype=bool)
            ax.scatter(x[mine], y[mine], s=10, color=cmap(k % cmap.N), label=name[:40], alpha=0.8, linewidths=0)
        if names:
            ax.legend(title=color, fontsize=7, markerscale=1.5, loc="best")
    else:
        values = np.array([np.nan if r["color"] is None else float(r["color"]) for r in rows])
        known = ~np.isnan(values)
        ax.scatter(x[~known], y[~known], s=8, color="lightgrey", linewidths=0, label="no score")
        dots = ax.scatter(x[known], y[known], s=10, c=values[known], cmap="viridis", linewidths=0)
        fig.colorbar(dots, ax=ax, label=color)
    ax.set_title(f"{len(rows):,} augmentations, coloured by {color} (PCA of CLIP embeddings)", fontsize=9)
    ax.set_xlabel("map x")
    ax.set_ylabel("map y")
    ax.grid(alpha=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out, len(rows)
