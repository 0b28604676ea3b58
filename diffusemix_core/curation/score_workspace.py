"""The ``score`` command's work: score every Î and A of a workspace that one scorer has not scored yet, in batches.

What is missing is found by query (:func:`_missing`: per source, which images lack the label scores or the flags),
scored a few sources at a time (:func:`_score_sources`: Î read from the store, A composed again from I, Î and F)
and committed batch by batch, so a killed run loses at most one batch and a rerun scores only what is left. The
rows and their vocabulary are ``scores.py``'s; near-duplicates are judged as in a bulk run (every Î of a source).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import quality
from ..errors import BadArgumentError
from ..engine.test_models import UNTRAINED_SCORER_NOTE
from ..workspace.manifest import write
from .embeddings import INSERT_EMBEDDING, SOURCE, embedding_rows, has_embeddings
from .label_scorer import DEFAULT_BATCH_SIZE
from .probe import ProbeSummary, train_probe
from .scores import (AUGMENTATION, AUTO, FLAGS, GENERATION, INSERT_SCORE, LABEL_PROB, NONE, _NO_ID, Scoring,
                     find_scorer, flag_row, generation_flags, label_rows, read_generations, register_scorer,
                     resolve_scorer, workspace_class_names)

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["ScoreSummary", "score_workspace"]


@dataclass
class ScoreSummary:
    """What :func:`score_workspace` did."""

    scorer: str | None  # the label scorer model (None: quality flags only)
    scorer_id: int | None = None
    quality_id: int | None = None
    is_test_model: bool = False
    augmentations: int = 0  # A scored now (label scores and/or flags)
    generations: int = 0  # Î scored now
    flagged: int = 0  # of those, how many have a flag
    seconds: float = 0.0
    cancelled: bool = False
    unlabelled: int = 0  # A without a true class (app images saved without a label): flags only
    sources: int = 0  # I embedded now (for the probe)
    embedded: int = 0  # image embeddings kept now (I, Î and A)
    probe: ProbeSummary | None = None  # the probe trained on the sources (probe.py), when there is a label scorer
    probe_seconds: float = 0.0

    @property
    def note(self) -> str:
        return UNTRAINED_SCORER_NOTE if self.is_test_model else ""


def _has(target: str, alias: str, scorer_id: int | None, metric: str) -> str:
    return (f"EXISTS (SELECT 1 FROM scores x WHERE x.target = '{target}' AND x.target_id = {alias}.id "
            f"AND x.scorer_id = {int(_NO_ID if scorer_id is None else scorer_id)} AND x.metric = '{metric}')")


def _missing(db, stage: Scoring, label_id: int | None, quality_id: int | None) -> tuple[dict, dict, int]:
    """What is left to score, by source: ``{source_id: {"augmentations": {id: (label?, flags?, embedding?)},
    "generations": {...}}}`` in source order, the number of images, and how many A have no true class."""
    todo: dict[int, dict[str, dict[int, tuple[bool, bool, bool]]]] = {}
    unlabelled = 0
    count = 0
    for target, table in ((AUGMENTATION, "augmentations"), (GENERATION, "generations")):
        for item_id, source_id, label, origin, has_label, has_flags, has_embedding in db.execute(
                f"SELECT t.id, t.source_id, s.label, s.origin, {_has(target, 't', label_id, LABEL_PROB)}, "
                f"{_has(target, 't', quality_id, FLAGS)}, {has_embeddings(label_id, target, 't')} "
                f"FROM {table} t JOIN sources s ON s.id = t.source_id ORDER BY t.source_id, t.id"):
            labelled = stage.model is not None and stage.labelled(label, origin)
            unlabelled += target == AUGMENTATION and stage.model is not None and not labelled
            need = (labelled and not has_label, not has_flags, stage.model is not None and not has_embedding)
            if any(need):
                todo.setdefault(source_id, {AUGMENTATION: {}, GENERATION: {}})[target][item_id] = need
                count += 1
    return dict(sorted(todo.items())), count, unlabelled


def _score_sources(workspace: Workspace, stage: Scoring, todo: dict, label_id: int | None,
                   quality_id: int) -> tuple[list[tuple], int, int, int]:
    """Rows for the scores missing on a few sources: (rows, A scored, Î scored, flagged)."""
    manifest, store = workspace.manifest, workspace.store
    labelled_images: list[tuple[str, int, np.ndarray, str, bool]] = []  # (target, id, image, label, embed?)
    embed_only: list[tuple[str, int, np.ndarray]] = []  # scored before embeddings were kept, or unlabelled
    rows: list[tuple] = []
    flagged = 0
    with manifest.session() as db:
        for source_id, work in todo.items():
            label, origin = db.execute("SELECT label, origin FROM sources WHERE id = ?", [source_id]).fetchone()
            gens = work[GENERATION]
            generated: dict[int, np.ndarray] = {}
            if gens:
                for gid, path in db.execute(
                        f"SELECT id, path FROM generations WHERE id IN ({','.join('?' * len(gens))})", list(gens)):
                    generated[gid] = store.read(path)
            per_image = {}
            for gid, (need_label, need_flags, need_embedding) in gens.items():
                if need_label:
                    labelled_images.append((GENERATION, gid, generated[gid], label, need_embedding))
                elif need_embedding:
                    embed_only.append((GENERATION, gid, generated[gid]))
                if need_flags:
                    per_image[gid] = quality.flags(generated[gid])
            if per_image:
                images = read_generations(db, store, source_id, generated)
                for gid, flags in generation_flags(images, per_image).items():
                    rows.append(flag_row(GENERATION, gid, quality_id, flags))
                    flagged += bool(flags)
            augs = work[AUGMENTATION]
            for row in (manifest.list_augmentations(ids=list(augs)) if augs else []):
                final = workspace.final_image(row)
                need_label, need_flags, need_embedding = augs[row["id"]]
                if need_label:
                    labelled_images.append((AUGMENTATION, row["id"], final, label, need_embedding))
                elif need_embedding:
                    embed_only.append((AUGMENTATION, row["id"], final))
                if need_flags:
                    flags = quality.flags(final)
                    rows.append(flag_row(AUGMENTATION, row["id"], quality_id, flags))
                    flagged += bool(flags)
    metrics, vectors = stage.label_metrics_embedded([w[2] for w in labelled_images], [w[3] for w in labelled_images])
    embedded: list[tuple] = []
    for i, ((target, item_id, _, _, need_embedding), values) in enumerate(zip(labelled_images, metrics)):
        rows += label_rows(target, item_id, label_id, values)
        if need_embedding and vectors is not None:
            embedded += embedding_rows(target, [item_id], label_id, vectors[i:i + 1])
    if embed_only:
        vectors = stage.embed([w[2] for w in embed_only])
        for (target, item_id, _), vector in zip(embed_only, vectors):
            embedded += embedding_rows(target, [item_id], label_id, vector[None])
    n_aug = sum(need[0] or need[1] for w in todo.values() for need in w[AUGMENTATION].values())
    n_gen = sum(need[0] or need[1] for w in todo.values() for need in w[GENERATION].values())
    return rows, embedded, n_aug, n_gen, flagged


def _embed_sources(workspace: Workspace, stage: Scoring, label_id: int | None, batch_size: int,
                   cancel: threading.Event | None) -> tuple[int | None, int]:
    """Embed the sources (I) that have no embedding from the label scorer yet (the probe trains on them):
    (the label scorer's id, how many were embedded)."""
    done = 0
    with workspace.manifest.session() as db:
        todo = db.execute(f"SELECT s.id, s.image_path FROM sources s WHERE s.status = 'ok' AND s.image_path IS NOT "
                          f"NULL AND NOT {has_embeddings(label_id, SOURCE, 's')} ORDER BY s.id").fetchall()
        if todo and label_id is None:
            stage.load()
            with write(db):
                label_id = register_scorer(db, stage.label_spec)
        for start in range(0, len(todo), batch_size):
            if cancel is not None and cancel.is_set():
                break
            chunk = todo[start:start + batch_size]
            vectors = stage.embed([workspace.store.read(path) for _, path in chunk])
            with write(db):
                db.conn.executemany(INSERT_EMBEDDING, embedding_rows(SOURCE, [i for i, _ in chunk], label_id,
                                                                     vectors))
            done += len(chunk)
    return label_id, done


def score_workspace(workspace: Workspace, scorer: str | None = AUTO, *,
                    class_map: str | Path | Mapping | None = None, device: str = "auto", dtype: str = "auto",
                    batch_size: int = DEFAULT_BATCH_SIZE, progress: Callable[[int, int], None] | None = None,
                    cancel: threading.Event | None = None) -> ScoreSummary:
    """Score every Î and A of `workspace` that has no score from `scorer` yet (and no quality flags yet).

    ``auto`` is judged from the workspace's generations (:func:`resolve_scorer`); ``none`` adds the quality flags
    only. Resumable: each batch of about `batch_size` images is committed on its own, and a rerun scores only what
    is missing; memory holds one batch. ``progress(done, total)`` counts images; ``cancel.is_set()`` stops
    between batches. A new scorer (another model, another class mapping) adds rows and keeps the others'.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadArgumentError(f"Bad batch size {batch_size!r}: pass an integer >= 1 (default {DEFAULT_BATCH_SIZE}).")
    started = time.perf_counter()
    names = workspace_class_names(workspace, (), class_map)
    model = resolve_scorer(scorer if scorer is not None else NONE, workspace=workspace)
    stage = Scoring(model, class_names=names, device=device, dtype=dtype, batch_size=batch_size)
    summary = ScoreSummary(scorer=model, is_test_model=stage.is_test_model)
    with workspace.manifest.session() as db:
        label_id = None if stage.label_spec is None else find_scorer(db, stage.label_spec)
        quality_id = find_scorer(db, stage.quality_spec)
        todo, total, summary.unlabelled = _missing(db, stage, label_id, quality_id)
        if todo:
            stage.load()  # before anything is written: an unavailable scorer fails in one sentence
            with write(db):
                label_id = None if stage.label_spec is None else register_scorer(db, stage.label_spec)
                quality_id = register_scorer(db, stage.quality_spec)
        summary.scorer_id, summary.quality_id = label_id, quality_id
        done = 0
        if progress is not None:
            progress(0, total)
        chunk: dict = {}
        size = 0
        sources = list(todo)
        for i, source_id in enumerate(sources):
            chunk[source_id] = todo.pop(source_id)
            size += sum(len(v) for v in chunk[source_id].values())
            if size < batch_size and i + 1 < len(sources):
                continue
            if cancel is not None and cancel.is_set():
                summary.cancelled = True
                break
            rows, embedded, n_aug, n_gen, flagged = _score_sources(workspace, stage, chunk, label_id, quality_id)
            with write(db):
                db.conn.executemany(INSERT_SCORE, rows)
                db.conn.executemany(INSERT_EMBEDDING, embedded)
            summary.augmentations += n_aug
            summary.generations += n_gen
            summary.flagged += flagged
            summary.embedded += len(embedded)
            done += size
            if progress is not None:
                progress(done, total)
            chunk, size = {}, 0
    if stage.model is not None and not summary.cancelled:
        summary.scorer_id, summary.sources = _embed_sources(workspace, stage, label_id, batch_size, cancel)
        summary.embedded += summary.sources
        if summary.scorer_id is not None and not summary.cancelled:
            probe_started = time.perf_counter()
            summary.probe = train_probe(workspace, scorer=summary.scorer_id)
            summary.probe_seconds = time.perf_counter() - probe_started
    summary.seconds = time.perf_counter() - started
    return summary
