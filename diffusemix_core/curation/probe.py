"""A probe trained on the user's own images: does an augmentation still look like its class, to a classifier that
knows these classes from the labelled sources rather than from CLIP's words?

ALIA (Dunlap et al. 2023) filters generated images with a classifier trained on the real data and confident-
learning thresholds. Here, top to bottom:

1. **data**: the label scorer's stored embeddings (``embeddings.py``) of the sources I with their labels;
2. **cross-validation**: a logistic regression (scikit-learn) per stratified fold; every source is scored by the
   model of the fold that held it out, and so are its Î and A (they are made from it: a model that saw I would
   flatter them). This is ``cross_val_predict`` with the augmentations carried along with their source;
3. **thresholds** (confident learning, Northcutt et al. 2021): the threshold of class k is the mean out-of-sample
   probability the probe gives class k over the sources labelled k;
4. **scores**: ``probe_prob`` (the probability of the source's label; ``text``: the probe's top class) and
   ``probe_low`` (1 when below the class's threshold) for every embedded Î and A, stored as a scorer of kind
   ``probe`` with the per-class numbers (thresholds, accuracy, the class each is confused with) in ``meta``.

One class, or a class with fewer than :data:`MIN_PER_CLASS` labelled images, skips the probe with a one-line
reason (:attr:`ProbeSummary.skipped`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..workspace.labels import UNLABELLED
from ..workspace.manifest import write
from .embeddings import SOURCE, read_embeddings
from .scores import (AUGMENTATION, GENERATION, INSERT_SCORE, LABEL_KIND, ScorerSpec, _canonical, latest_scorer,
                     register_scorer)

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["MIN_PER_CLASS", "PROBE_KIND", "PROBE_LOW", "PROBE_PROB", "ProbeSummary", "probe_scorer", "probe_stats", "train_probe"]

PROBE_KIND = "probe"
PROBE_PROB, PROBE_LOW = "probe_prob", "probe_low"
MIN_PER_CLASS = 2  # labelled sources per class: two folds at least
MAX_FOLDS = 5
C = 1.0  # inverse regularisation of the logistic regression (scikit-learn's default)
_META = "probe:"  # meta key prefix: the per-class numbers of a probe scorer


@dataclass
class ProbeSummary:
    """What :func:`train_probe` did (or why it did not: ``skipped``)."""

    skipped: str = ""
    scorer_id: int | None = None
    sources: int = 0
    classes: int = 0
    folds: int = 0
    scored: int = 0  # Î and A scored
    low: int = 0  # A flagged probe_low
    seconds: float = 0.0
    accuracy: float | None = None  # out-of-sample top-1 accuracy on the sources
    up_to_date: bool = False  # nothing changed since the last probe: nothing done

    def describe(self) -> str:
        if self.skipped:
            return f"probe skipped: {self.skipped}"
        if self.up_to_date:
            return f"probe (#{self.scorer_id}) up to date"
        return (f"probe (#{self.scorer_id}): logistic regression on {self.sources} labelled source(s) of "
                f"{self.classes} classes, {self.folds}-fold cross-validated (source accuracy {self.accuracy:.2f}); "
                f"scored {self.scored} image(s), {self.low} augmentation(s) below their class's threshold "
                f"in {self.seconds:.1f} s")


def _labelled_sources(db, scorer: dict) -> dict[int, str]:
    names = json.loads(scorer["settings"]).get("class_names", {})
    return {sid: label for sid, label, origin in db.execute("SELECT id, label, origin FROM sources WHERE status = 'ok'")
            if label in names and not (origin == "app" and label == UNLABELLED)}


def _targets(db, scorer_id: int) -> dict[str, list[tuple[int, int]]]:
    """(image id, source id) of every embedded Î and A."""
    out = {}
    for target, table in ((AUGMENTATION, "augmentations"), (GENERATION, "generations")):
        out[target] = db.execute(
            f"SELECT t.id, t.source_id FROM {table} t JOIN embeddings e ON e.target = '{target}' AND e.target_id = "
            f"t.id AND e.scorer_id = ? ORDER BY t.id", [scorer_id]).fetchall()
    return out


def _skip_reason(counts: dict[str, int]) -> str:
    if not counts:
        return "no labelled source has an embedding yet (run `score` with a CLIP scorer)."
    if len(counts) < 2:
        return (f"the workspace has one class ({next(iter(counts))}); a probe needs two or more classes (the "
                "zero-shot label scores still apply).")
    few = sorted((n, k) for k, n in counts.items() if n < MIN_PER_CLASS)
    if few:
        return (f"class {few[0][1]} has {few[0][0]} labelled image(s); the probe needs at least {MIN_PER_CLASS} per "
                "class for cross-validation (add images of that class).")
    return ""


def train_probe(workspace: Workspace, *, scorer: str | int | None = None, force: bool = False) -> ProbeSummary:
    """Train the cross-validated probe on the sources' embeddings of the latest label scorer (or `scorer`) and
    score every embedded Î and A; nothing is done when the sources, their labels and the scored images are as
    the last probe of this scorer left them (unless `force`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    started = time.perf_counter()
    label_row = latest_scorer(workspace, LABEL_KIND, scorer)
    if label_row is None:
        return ProbeSummary(skipped="the workspace has no label scores yet (run `score`).")
    with workspace.manifest.session() as db:
        labels = _labelled_sources(db, label_row)
        ids, vectors = read_embeddings(workspace, label_row["id"], SOURCE, ids=labels, db=db)
        y = np.array([labels[int(i)] for i in ids])
        classes, counts = np.unique(y, return_counts=True)
        skipped = _skip_reason(dict(zip(classes.tolist(), counts.tolist())))
        if skipped:
            return ProbeSummary(skipped=skipped, sources=len(ids), classes=len(classes))
        targets = _targets(db, label_row["id"])
        content = hashlib.sha256(json.dumps([ids.tolist(), y.tolist(), {t: [r[0] for r in v]
                                                                         for t, v in targets.items()}]).encode())
        spec = ScorerSpec(PROBE_KIND, label_row["model"], _canonical(
            {"label_scorer": label_row["id"], "classifier": "logistic_regression", "C": C,
             "max_folds": MAX_FOLDS, "content": content.hexdigest()}), bool(label_row["is_test_model"]))
        known = db.execute("SELECT id FROM scorers WHERE key = ?", [spec.key]).fetchone()
        if known and not force:
            return ProbeSummary(scorer_id=known[0], up_to_date=True)
        folds = int(min(MAX_FOLDS, counts.min()))
        source_fold = {}
        oos = np.zeros((len(ids), len(classes)))
        models = []
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
        for k, (train, held) in enumerate(splitter.split(vectors, y)):
            model = LogisticRegression(C=C, max_iter=1000).fit(vectors[train], y[train])
            oos[held] = _proba(model, vectors[held], classes)
            models.append(model)
            source_fold.update({int(ids[i]): k for i in held})
        column = {c: j for j, c in enumerate(classes)}
        truth = np.array([column[c] for c in y])
        thresholds = {c: float(oos[truth == j, j].mean()) for c, j in column.items()}
        rows, low = [], 0
        for target, items in targets.items():
            items = [(i, s) for i, s in items if s in source_fold]
            if not items:
                continue
            item_ids, item_vectors = read_embeddings(workspace, label_row["id"], target, ids=[i for i, _ in items],
                                                     db=db)
            source_of = dict(items)
            fold_of = np.array([source_fold[source_of[int(i)]] for i in item_ids])
            probs = np.zeros((len(item_ids), len(classes)))
            for k, model in enumerate(models):
                if (fold_of == k).any():
                    probs[fold_of == k] = _proba(model, item_vectors[fold_of == k], classes)
            for i, row in zip(item_ids, probs):
                label = labels[source_of[int(i)]]
                p = float(row[column[label]])
                is_low = p < thresholds[label]
                low += target == AUGMENTATION and is_low
                rows += [(target, int(i), None, PROBE_PROB, p, str(classes[int(row.argmax())])),
                         (target, int(i), None, PROBE_LOW, float(is_low), f"{thresholds[label]:.4f}")]
        stats = _class_stats(classes, truth, oos, thresholds)
        with write(db):
            old = [r[0] for r in db.execute("SELECT id FROM scorers WHERE kind = ? AND model = ?",
                                            [PROBE_KIND, label_row["model"]])]
            probe_id = register_scorer(db, spec)
            for stale in old:  # one probe per label scorer: the last one's rows only
                if stale != probe_id and json.loads(db.execute("SELECT settings FROM scorers WHERE id = ?",
                                                               [stale]).fetchone()[0])["label_scorer"] == label_row["id"]:
                    db.execute("DELETE FROM scores WHERE scorer_id = ?", [stale])
            db.execute("DELETE FROM scores WHERE scorer_id = ?", [probe_id])
            db.conn.executemany(INSERT_SCORE, [(t, i, probe_id, m, v, x) for t, i, _, m, v, x in rows])
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       [f"{_META}{probe_id}", json.dumps(stats, ensure_ascii=False)])
    return ProbeSummary(scorer_id=probe_id, sources=len(ids), classes=len(classes), folds=folds, scored=len(rows) // 2,
                        low=int(low), seconds=time.perf_counter() - started,
                        accuracy=float((oos.argmax(axis=1) == truth).mean()))


def _proba(model, vectors: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """predict_proba with a column per class of `classes` (a fold may lack none: folds are stratified)."""
    out = np.zeros((len(vectors), len(classes)))
    out[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(vectors)
    return out


def _class_stats(classes: np.ndarray, truth: np.ndarray, oos: np.ndarray, thresholds: dict) -> dict:
    """Per class: sources, the threshold, out-of-sample accuracy, and the class it is most confused with."""
    stats = {}
    predicted = oos.argmax(axis=1)
    for j, c in enumerate(classes):
        mine = truth == j
        others = [(float((predicted[mine] == m).mean()), str(classes[m])) for m in range(len(classes)) if m != j]
        share, confused = max(others) if others else (0.0, "")
        stats[str(c)] = {"sources": int(mine.sum()), "threshold": thresholds[c],
                         "accuracy": float((predicted[mine] == j).mean()),
                         "confused_with": confused if share > 0 else "", "confused_share": share}
    return stats


def probe_scorer(db, label_id: int | None) -> dict | None:
    """The latest probe scorer row trained on the embeddings of label scorer `label_id` (None: none)."""
    if label_id is None:
        return None
    row = db.execute("SELECT id, model, is_test_model FROM scorers WHERE kind = ? AND json_extract(settings, "
                     "'$.label_scorer') = ? ORDER BY id DESC LIMIT 1", [PROBE_KIND, int(label_id)]).fetchone()
    return None if row is None else {"id": row[0], "model": row[1], "is_test_model": row[2]}


def probe_stats(workspace: Workspace, probe_id: int) -> dict:
    """The per-class numbers stored with probe `probe_id` ({} when none)."""
    with workspace.manifest.session() as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", [f"{_META}{int(probe_id)}"]).fetchone()
    return json.loads(row[0]) if row else {}
