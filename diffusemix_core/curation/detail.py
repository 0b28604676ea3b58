"""One augmentation in full, as the Curate view's detail panel shows it: what A is made of, every score of A and Î,
whose scores these are (and whether the scorer is untrained), and the decisions made on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..checks import check_int
from ..errors import WorkspaceError
from ..workspace.decisions import history
from .captions import flags_text, number_text, rank_text, scorer_note
from .queries import scored_augmentations
from .scores import LABEL_KIND, QUALITY_KIND, latest_scorer

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["DETAIL_COLUMNS", "HISTORY_COLUMNS", "Detail", "detail"]


@dataclass(frozen=True)
class Detail:
    """One augmentation in full: its scored row, its manifest row, the scorers and its decision history."""

    row: dict  # queries.SCORED_COLUMNS
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
            ["label probability", number_text(r["label_prob"], 3), number_text(r["generated_label_prob"], 3)],
            ["label rank (1 = top)", rank_text(r["label_rank"]), rank_text(r["generated_label_rank"])],
            ["CLIP's top class", r["top_class"] or "–", r["generated_top_class"] or "–"],
            ["flags", flags_text(r["flags"], "none"), flags_text(r["generated_flags"], "none")],
            ["drift of Î from I", "", number_text(r["drift"], 3)],
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
    rows = scored_augmentations(workspace, scorer=scorer, ids=[aug_id])
    if not rows:
        raise WorkspaceError(f"no augmentation #{aug_id} in this workspace; pick one from the gallery.")
    return Detail(row=rows[0], stored=workspace.manifest.get_augmentation(aug_id),
                  label_scorer=latest_scorer(workspace, LABEL_KIND, scorer),
                  quality_scorer=latest_scorer(workspace, QUALITY_KIND),
                  history=history(workspace.manifest, aug_id))
