"""The scores stage of a bulk run (optional, after compose): label scores and quality flags of every new Î and A.

:class:`Score` applies a ``curation.scores.Scoring`` configuration to the composed slots of a batch (it sees Î and
A while they are in memory); the results travel on the slots (``Slot.scores``) and the commit (``stages.Commit``)
stores them in its transaction, with the batch's rows. :func:`score_stage` picks the stage a run uses (``--scorer``:
auto, none, a CLIP model id or folder). Scoring later, with the ``score`` command, gives the same
rows (``curation/score_workspace.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..curation import quality
from ..curation.embeddings import SOURCE
from ..curation.label_scorer import DEFAULT_BATCH_SIZE
from ..curation.scores import AUGMENTATION, AUTO, GENERATION, Scoring, resolve_scorer, workspace_class_names
from ..errors import ModelUnavailableError

if TYPE_CHECKING:
    from ..workspace.folder import Workspace
    from .stages import Batch

__all__ = ["Score", "score_stage"]

log = logging.getLogger(__name__)


class Score(Scoring):
    """The scores stage: a callable over a :class:`~.stages.Batch` (a Ray task's function too), filling
    ``slot.scores`` of every composed slot. Pickling carries the settings, never the model. ``model=None``
    computes the quality flags only. Near-duplicates need every Î of the source: the commit adds them
    (``curation.scores.insert_scores``)."""

    def __call__(self, batch: Batch) -> Batch:
        work = []  # (slot, target, image) whose label is scored
        sources = []  # (source, its slots) whose I is embedded, for the probe
        for source in batch.sources:
            if source.image is None:
                continue
            if self.model is not None and self.labelled(source.label):
                sources.append(source)
            for slot in source.slots:
                if slot.record is None:
                    continue
                slot.scores = {
                    "label": self.label_spec, "quality": self.quality_spec,
                    GENERATION: {"label": None, "flags": quality.flags(slot.generated)},
                    AUGMENTATION: {"label": None, "flags": quality.flags(slot.record.final)},
                }
                if self.model is not None and self.labelled(source.label):
                    work += [(slot, GENERATION, slot.generated, source.label),
                             (slot, AUGMENTATION, slot.record.final, source.label)]
        for start in range(0, len(work), self.batch_size):
            chunk = work[start:start + self.batch_size]
            metrics, vectors = self.label_metrics_embedded([w[2] for w in chunk], [w[3] for w in chunk])
            for i, ((slot, target, _, _), values) in enumerate(zip(chunk, metrics)):
                slot.scores[target]["label"] = values
                slot.scores[target]["embedding"] = None if vectors is None else vectors[i].astype("float16")
        for start in range(0, len(sources), self.batch_size):
            chunk = sources[start:start + self.batch_size]
            for source, vector in zip(chunk, self.embed([s.image for s in chunk])):
                for slot in source.slots:
                    if slot.scores is not None:
                        slot.scores[SOURCE] = vector.astype("float16")
        return batch


def score_stage(workspace: Workspace, scorer: str | Score | None = AUTO, *, labels: Iterable[str] = (),
                class_map: str | Path | Mapping | None = None, generator_model: str | None = None,
                device: str = "auto", dtype: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE,
                load: bool = True) -> Score | None:
    """The :class:`Score` stage a bulk run on `workspace` uses, or None for ``scorer`` None/``none``.

    Remembers the classes (`labels`: the run's class folders) and the `class_map` in the workspace either way.
    ``auto`` picks the scorer from `generator_model` (:func:`resolve_scorer`); if that model cannot be loaded
    (offline and not cached), a warning says so and the stage computes the quality flags only (``score`` adds the
    label scores later). A scorer named explicitly that cannot be loaded is an error (ModelUnavailableError).
    """
    if isinstance(scorer, Score):
        return scorer
    names = workspace_class_names(workspace, labels, class_map)
    model = resolve_scorer(scorer, generator_model=generator_model, workspace=workspace)
    if model is None:
        return None
    stage = Score(model, class_names=names, device=device, dtype=dtype, batch_size=batch_size)
    if load:
        try:
            stage.load()
        except ModelUnavailableError as exc:
            if scorer != AUTO:
                raise
            log.warning("label scores skipped: %s Quality flags are stored; add the label scores later with "
                        "`python -m diffusemix_core score --workspace %s`.", exc, workspace.path)
            stage = Score(None, class_names=names, device=device, dtype=dtype, batch_size=batch_size)
    if len(set(names.values())) == 1 and stage.model is not None:
        log.warning("the workspace has one class: its label probability is 1 by construction")
    return stage
