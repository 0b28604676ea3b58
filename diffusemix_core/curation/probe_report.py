"""Per class, how the probe (trained on the user's labelled images, ``probe.py``) and zero-shot CLIP agree: the
probe's accuracy on held-out sources and the class it confuses each one with (two dog breeds), and over the
augmentations the share each judge calls off-class and how often they agree."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .probe import probe_scorer, probe_stats
from .queries import scored_augmentations
from .scores import LABEL_KIND, latest_scorer

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["PROBE_REPORT_COLUMNS", "probe_report"]

PROBE_REPORT_COLUMNS = (
    "label", "sources", "probe_threshold", "probe_accuracy", "confused_with", "confused_share", "augmentations",
    "mean_probe_prob", "mean_label_prob", "probe_low_share", "zero_shot_low_share", "agreement",
)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def probe_report(workspace: Workspace, *, scorer: str | int | None = None) -> tuple[list[dict], dict | None]:
    """(one row per class, :data:`PROBE_REPORT_COLUMNS`; the probe scorer row or None when there is no probe).

    ``probe_low_share``: A below its class's probe threshold; ``zero_shot_low_share``: A whose true class is not
    CLIP's top choice (rank > 1); ``agreement``: the share of A where both say the same (both low or both fine).
    """
    label_row = latest_scorer(workspace, LABEL_KIND, scorer)
    with workspace.manifest.session() as db:
        probe = probe_scorer(db, label_row and label_row["id"])
    if probe is None:
        return [], None
    stats = probe_stats(workspace, probe["id"])
    by_label: dict[str, list[dict]] = {}
    for row in scored_augmentations(workspace, scorer=label_row["id"]):
        by_label.setdefault(str(row["label"]), []).append(row)
    out = []
    for label, s in sorted(stats.items()):
        members = by_label.get(label, [])
        both = [(bool(r["probe_low"]), r["label_rank"] > 1) for r in members
                if r["probe_low"] is not None and r["label_rank"] is not None]
        out.append({
            "label": label, "sources": s["sources"], "probe_threshold": s["threshold"],
            "probe_accuracy": s["accuracy"], "confused_with": s["confused_with"] or None,
            "confused_share": s["confused_share"], "augmentations": len(members),
            "mean_probe_prob": _mean([r["probe_prob"] for r in members]),
            "mean_label_prob": _mean([r["label_prob"] for r in members]),
            "probe_low_share": _mean([float(p) for p, _ in both]) if both else None,
            "zero_shot_low_share": _mean([float(z) for _, z in both]) if both else None,
            "agreement": _mean([float(p == z) for p, z in both]) if both else None,
        })
    return out, probe
