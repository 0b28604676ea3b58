"""Curation at scale, the writing side: label-consistency scores and quality flags computed and stored in the
workspace. Does each augmentation still show its class? (Reading them: ``score_queries.py``.)

The story, top to bottom:

1. **storage** (tables in ``manifest.py``, docs/workspace.md "Scores"): ``scorers`` holds one row per scorer
   configuration (a CLIP model with its class names and templates, or the quality flags with their thresholds);
   ``scores`` is long format, one row per (image, scorer, metric): the image is Î (``target = 'generation'``) or A
   (``target = 'augmentation'``). A new scorer adds rows and never touches another scorer's;
2. **class names**: the workspace's labels (remembered in ``meta`` as ``class_labels``, so every command scores
   over the same classes) named by ``scoring.class_names``, with the mapping file of ``--class-map`` remembered
   in ``meta`` as ``class_map``;
3. **the bulk-run stage** :class:`Score` (after compose: it sees Î and A), whose results travel on the slots and
   are inserted by ``bulk_stages.Commit`` through :func:`insert_source_scores`, in the batch's transaction;
4. **the ``score`` command**: :func:`score_workspace` scores what is missing for one scorer, in batches;
5. the queries over the scores, the ``review --auto`` rules and the prompt report are in ``score_queries.py``.

Metrics: ``label_prob`` (probability of the true class, softmax over all class names), ``label_rank`` (1 = CLIP's
top choice), ``top_prob`` (CLIP's top choice's probability; ``text`` = its class name) for every labelled Î and
A; ``flags`` (``value`` = how many, ``text`` = comma-separated ``black``, ``blank``, ``low_information``, and for Î
``near_duplicate``; ``''`` when clean) for every Î and A. Near-duplicates are judged among all the Î of one source,
in generation id order (``quality.near_duplicates``: the first of a set stays unflagged), so scoring in a bulk run
and scoring later give the same flags.

Over the house's ~450 lines: storage, the stage and the command share the scorer specs and the per-source writing;
the reading side is score_queries.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import quality
from ..errors import BadArgumentError, ModelUnavailableError
from ..workspace.manifest import now, write
from ..engine.test_models import TEST_MODELS, TEST_SCORERS, UNTRAINED_SCORER_NOTE
from ..workspace.labels import UNLABELLED
from .class_names import class_names, load_class_mapping
from .label_scorer import DEFAULT_BATCH_SIZE, DEFAULT_SCORER, DEFAULT_TEMPLATES, LabelScorer

if TYPE_CHECKING:
    from ..bulk.stages import Batch, Source
    from ..workspace.store import ImageStore
    from ..workspace.folder import Workspace

__all__ = [
    "AUTO",
    "GENERATION",
    "AUGMENTATION",
    "LABEL_METRICS",
    "NONE",
    "Score",
    "ScoreSummary",
    "ScorerSpec",
    "insert_source_scores",
    "latest_scorer",
    "list_scorers",
    "resolve_scorer",
    "score_stage",
    "score_workspace",
    "workspace_class_names",
]

log = logging.getLogger(__name__)

AUTO, NONE = "auto", "none"
LABEL_KIND, QUALITY_KIND = "label", "quality"
GENERATION, AUGMENTATION = "generation", "augmentation"
LABEL_PROB, LABEL_RANK, TOP_PROB, FLAGS = "label_prob", "label_rank", "top_prob", "flags"
LABEL_METRICS = (LABEL_PROB, LABEL_RANK, TOP_PROB)
META_CLASS_LABELS, META_CLASS_MAP = "class_labels", "class_map"
HUMAN_ORIGINS = ("app", "cli", "api")  # decisions made by people (not 'auto', a rule)
_NO_ID = -1  # a scorer id no row has: joins on it find nothing


# ------------------------------------------------------------------------------------------------ scorers
@dataclass(frozen=True)
class ScorerSpec:
    """One scorer configuration, as stored in ``scorers``: equal specs are one row (by :attr:`key`)."""

    kind: str  # 'label' or 'quality'
    model: str  # CLIP id or folder; 'quality' for the flags
    settings: str  # canonical JSON
    is_test_model: bool = False

    @cached_property
    def key(self) -> str:
        return hashlib.sha256("\0".join((self.kind, self.model, self.settings)).encode("utf-8")).hexdigest()


def _canonical(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, ensure_ascii=False)


def quality_spec() -> ScorerSpec:
    """The quality flags with the thresholds of ``quality.py``: a change of threshold is a new scorer."""
    settings = {name.lower(): getattr(quality, name) for name in (
        "BLACK_LEVEL", "BLACK_MIN_FRACTION", "BLANK_SIZE", "BLANK_MAX_SPREAD", "LOW_INFORMATION_MAX_ENTROPY",
        "NEAR_DUPLICATE_SIZE", "NEAR_DUPLICATE_MAX_DISTANCE")}
    return ScorerSpec(QUALITY_KIND, "quality", _canonical(settings))


def resolve_scorer(scorer: str | None, *, generator_model: str | None = None,
                   workspace: Workspace | None = None) -> str | None:
    """The scorer model that ``scorer`` names: ``auto`` is :data:`scoring.DEFAULT_SCORER` for a real generator
    model and ``tiny-random-clip`` for a test model (judged from ``generator_model``, else from the workspace's
    generations: all made by a test model -> the test scorer); ``none``/None -> None; anything else as given."""
    if scorer is None or scorer == NONE:
        return None
    if not isinstance(scorer, str) or not scorer.strip():
        raise BadArgumentError(f"Bad scorer {scorer!r}: pass auto, none, a CLIP model id or a local folder.")
    if scorer != AUTO:
        return scorer
    if generator_model is not None:
        return TEST_SCORERS[0] if generator_model in TEST_MODELS else DEFAULT_SCORER
    if workspace is not None:
        with workspace.manifest.session() as db:
            real, test = db.execute("SELECT coalesce(sum(is_test_model = 0), 0), coalesce(sum(is_test_model), 0) "
                                    "FROM generations").fetchone()
        if test and not real:
            return TEST_SCORERS[0]
    return DEFAULT_SCORER


def _register(db, spec: ScorerSpec) -> int:
    """The id of `spec`'s row in ``scorers``, inserted if new (inside the caller's write transaction)."""
    db.execute("INSERT OR IGNORE INTO scorers (kind, model, settings, key, is_test_model, created_at) "
               "VALUES (?, ?, ?, ?, ?, ?)", [spec.kind, spec.model, spec.settings, spec.key, int(spec.is_test_model),
                                             now()])
    return db.execute("SELECT id FROM scorers WHERE key = ?", [spec.key]).fetchone()[0]


def _find(db, spec: ScorerSpec) -> int | None:
    row = db.execute("SELECT id FROM scorers WHERE key = ?", [spec.key]).fetchone()
    return None if row is None else row[0]


def list_scorers(workspace: Workspace) -> list[dict]:
    """Every scorer of the workspace, oldest first, with how many Î and A it scored (``generations``,
    ``augmentations``) and ``note`` (the untrained-scorer warning, or '')."""
    with workspace.manifest.session() as db:
        rows = list(db.query(
            "SELECT s.id, s.kind, s.model, s.is_test_model, s.created_at, s.settings, "
            "(SELECT count(*) FROM scores x WHERE x.scorer_id = s.id AND x.target = 'generation' "
            " AND x.metric IN ('label_prob', 'flags')) AS generations, "
            "(SELECT count(*) FROM scores x WHERE x.scorer_id = s.id AND x.target = 'augmentation' "
            " AND x.metric IN ('label_prob', 'flags')) AS augmentations FROM scorers s ORDER BY s.id"))
    for row in rows:
        row["note"] = UNTRAINED_SCORER_NOTE if row["is_test_model"] else ""
    return rows


def latest_scorer(workspace: Workspace, kind: str = LABEL_KIND, scorer: str | int | None = None,
                  db=None) -> dict | None:
    """The scorer row whose scores a query uses: the latest added of `kind`, or the latest with model `scorer`
    (a model id or folder as given to ``--scorer``, or a scorer id). None when the workspace has none of `kind`;
    BadArgumentError (naming the scorers there are) when `scorer` names none."""
    with workspace.manifest.session(db) as db:
        if scorer is None:
            rows = list(db.query("SELECT * FROM scorers WHERE kind = ? ORDER BY id DESC LIMIT 1", [kind]))
        elif isinstance(scorer, int) or str(scorer).lstrip("#").isdigit():
            rows = list(db.query("SELECT * FROM scorers WHERE kind = ? AND id = ?",
                                 [kind, int(str(scorer).lstrip("#"))]))
        else:
            rows = list(db.query("SELECT * FROM scorers WHERE kind = ? AND model = ? ORDER BY id DESC LIMIT 1",
                                 [kind, str(scorer)]))
        if rows or scorer is None:
            return rows[0] if rows else None
        known = [f"{r[1]} (#{r[0]})" for r in db.execute("SELECT id, model FROM scorers WHERE kind = ?", [kind])]
    raise BadArgumentError(
        f"no scores from scorer {scorer!r} in '{workspace.path}'"
        + (f"; it has {', '.join(known)}" if known else "; it has no label scores yet")
        + f"; run `score --workspace {workspace.path} --scorer {scorer}` first, or pass one of those.")


# ------------------------------------------------------------------------------------------------ class names
def workspace_class_names(workspace: Workspace, labels: Iterable[str] = (), class_map: str | Path | Mapping | None
                          = None) -> dict[str, str]:
    """``{label: class name}`` over every class of the workspace, remembering what it is given.

    The classes are the labels remembered in ``meta`` (``class_labels``), those of the workspace's sources (not
    the app's unlabelled images) and `labels` (a bulk run's class folders); the union is remembered. A
    `class_map` (a mapping file, see ``scoring.load_class_mapping``, or a dict) replaces the remembered mapping;
    without one the remembered mapping (if any) is used. Folder names without a mapping become words
    (``golden_retriever`` -> ``golden retriever``).
    """
    mapping = None
    if class_map is not None:
        mapping = load_class_mapping(class_map) if isinstance(class_map, (str, Path)) else dict(class_map)
    with workspace.manifest.session() as db, write(db):
        stored = db.execute("SELECT value FROM meta WHERE key = ?", [META_CLASS_LABELS]).fetchone()
        known = set(json.loads(stored[0])) if stored else set()
        found = {r[0] for r in db.execute("SELECT DISTINCT label FROM sources WHERE label IS NOT NULL AND NOT "
                                          "(origin = 'app' AND label = ?)", [UNLABELLED])}
        every = sorted(known | found | {str(label) for label in labels})
        if set(every) != known:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       [META_CLASS_LABELS, json.dumps(every, ensure_ascii=False)])
        if mapping is not None:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       [META_CLASS_MAP, json.dumps(mapping, ensure_ascii=False, sort_keys=True)])
        else:
            row = db.execute("SELECT value FROM meta WHERE key = ?", [META_CLASS_MAP]).fetchone()
            mapping = json.loads(row[0]) if row else {}
    if class_map is not None and every and not set(mapping) & set(every):
        log.warning("the class mapping names none of the workspace's %d class folders (e.g. %r): check the file",
                    len(every), every[0])
    return class_names(every, mapping)


# ------------------------------------------------------------------------------------------------ the stage
def _label_metrics(score) -> dict[str, tuple[float, str | None]]:
    return {LABEL_PROB: (score.prob, None), LABEL_RANK: (float(score.rank), None),
            TOP_PROB: (score.top_prob, score.top_name)}


class Score:
    """The scoring stage of a bulk run: label scores and per-image flags of every composed slot's Î and A.

    A callable class over a ``bulk_stages.Batch`` (a Ray actor too): the constructor takes plain settings only
    (:meth:`settings` gives them back), the model loads on first use, and pickling carries the settings, never
    the model. ``model=None`` computes the quality flags only. The results go to ``slot.scores``; Commit stores
    them (:func:`insert_source_scores`), adding near-duplicates, which need every Î of the source.
    """

    def __init__(self, model: str | None, *, class_names: Mapping[str, str], device: str = "auto",
                 dtype: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE, revision: str | None = None,
                 templates: Sequence[str] = DEFAULT_TEMPLATES) -> None:
        self.model = model
        self.class_names = dict(class_names)
        self.device, self.dtype, self.batch_size, self.revision = device, dtype, batch_size, revision
        self.templates = tuple(templates)
        self.is_test_model = model in TEST_SCORERS
        self.label_spec = None if model is None else ScorerSpec(LABEL_KIND, model, _canonical(
            {"revision": revision, "templates": list(self.templates), "class_names": self.class_names}),
            self.is_test_model)
        self.quality_spec = quality_spec()
        self._scorer: LabelScorer | None = None
        self._lock = threading.Lock()

    def settings(self) -> dict[str, Any]:
        """The constructor's keyword arguments (``Score(**s.settings())`` is an equal stage), e.g. for Ray's
        ``fn_constructor_kwargs``."""
        return {"model": self.model, "class_names": dict(self.class_names), "device": self.device,
                "dtype": self.dtype, "batch_size": self.batch_size, "revision": self.revision,
                "templates": list(self.templates)}

    def __getstate__(self) -> dict[str, Any]:
        return self.settings()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.pop("model"), **state)

    def __repr__(self) -> str:
        return f"Score({self.model!r}, {len(self.class_names)} classes)"

    @property
    def note(self) -> str:
        return UNTRAINED_SCORER_NOTE if self.is_test_model else ""

    def load(self) -> Score:
        """Load the label scorer (ModelUnavailableError with the remedy when it cannot be); returns self."""
        if self.model is not None:
            with self._lock:
                if self._scorer is None:
                    self._scorer = LabelScorer(self.model, device=self.device, dtype=self.dtype,
                                               templates=self.templates, batch_size=self.batch_size,
                                               revision=self.revision).load()
        return self

    def label_metrics(self, images: Sequence[np.ndarray], labels: Sequence[str]) -> list[dict]:
        """``{metric: (value, text)}`` of each image for its label (a key of ``class_names``)."""
        if self.model is None or not images:
            return [{} for _ in images]
        self.load()
        names = list(dict.fromkeys(self.class_names.values()))
        scores = self._scorer.score(list(images), [self.class_names[label] for label in labels], names)
        return [_label_metrics(s) for s in scores]

    def labelled(self, label: str | None, origin: str = "dataset") -> bool:
        """Whether an image of this source has a true class to score against."""
        return label in self.class_names and not (origin == "app" and label == UNLABELLED)

    def __call__(self, batch: Batch) -> Batch:
        work = []  # (slot, target, image) whose label is scored
        for source in batch.sources:
            if source.image is None:
                continue
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
            metrics = self.label_metrics([w[2] for w in chunk], [w[3] for w in chunk])
            for (slot, target, _, _), values in zip(chunk, metrics):
                slot.scores[target]["label"] = values
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


# ------------------------------------------------------------------------------------------------ storing
_INSERT = ("INSERT OR IGNORE INTO scores (target, target_id, scorer_id, metric, value, text) "
           "VALUES (?, ?, ?, ?, ?, ?)")


def _flag_row(target: str, target_id: int, scorer_id: int, flags: Sequence[str]) -> tuple:
    return (target, target_id, scorer_id, FLAGS, float(len(flags)), ",".join(flags))


def _label_rows(target: str, target_id: int, scorer_id: int, metrics: Mapping) -> list[tuple]:
    return [(target, target_id, scorer_id, metric, float(value), text) for metric, (value, text) in metrics.items()]


def _generation_flags(images: dict[int, np.ndarray | None], per_image: Mapping[int, list[str]]) -> dict[int, list]:
    """Flags of the Î in `per_image` (their per-image flags, plus near_duplicate judged among `images`: every
    readable Î of one source by generation id; None for one that cannot be read)."""
    ids = [gid for gid in sorted(images) if images[gid] is not None]
    duplicate = dict(zip(ids, quality.near_duplicates([images[gid] for gid in ids])))
    return {gid: list(flags) + ([quality.FLAG_NEAR_DUPLICATE] if duplicate.get(gid) else [])
            for gid, flags in per_image.items()}


def _read_generations(db, store: ImageStore, source_id: int, have: Mapping[int, np.ndarray]) -> dict:
    """Every Î of a source by generation id (those in `have` as given, the others read from the store)."""
    images: dict[int, np.ndarray | None] = {}
    for gid, path in db.execute("SELECT id, path FROM generations WHERE source_id = ? ORDER BY id", [source_id]):
        if gid in have:
            images[gid] = have[gid]
            continue
        try:
            images[gid] = store.read(path)
        except Exception as exc:  # noqa: BLE001 - a missing or damaged file: judged without it (`check` reports it)
            log.warning("near-duplicates of source %d judged without generation %d (%s)", source_id, gid, exc)
            images[gid] = None
    return images


def insert_source_scores(db, store: ImageStore, source: Source) -> int:
    """Store the scores :class:`Score` put on the slots of one committed source (inside Commit's transaction,
    after the source's rows); returns how many rows were added. A score already stored is kept."""
    slots = [s for s in source.slots if s.scores is not None and s.record is not None and s.generation_id is not None]
    if not slots:
        return 0
    label_spec, q_spec = slots[0].scores["label"], slots[0].scores["quality"]
    label_id = None if label_spec is None else _register(db, label_spec)
    quality_id = _register(db, q_spec)
    rows: list[tuple] = []
    new: dict[int, np.ndarray] = {}
    per_image: dict[int, list[str]] = {}
    for slot in slots:
        aug_id = db.execute("SELECT id FROM augmentations WHERE source_id = ? AND job_key = ?",
                            [source.source_id, slot.job_key]).fetchone()[0]
        final, generated = slot.scores[AUGMENTATION], slot.scores[GENERATION]
        rows.append(_flag_row(AUGMENTATION, aug_id, quality_id, final["flags"]))
        if label_id is not None and final["label"]:
            rows += _label_rows(AUGMENTATION, aug_id, label_id, final["label"])
        if label_id is not None and generated["label"]:
            rows += _label_rows(GENERATION, slot.generation_id, label_id, generated["label"])
        if slot.generated is not None:  # a batch back from Ray comes without its arrays: Î is read from the store
            new.setdefault(slot.generation_id, slot.generated)
        per_image.setdefault(slot.generation_id, generated["flags"])
    marks = ",".join("?" * len(per_image))
    have = {r[0] for r in db.execute(
        f"SELECT target_id FROM scores WHERE target = 'generation' AND scorer_id = ? AND metric = 'flags' "
        f"AND target_id IN ({marks})", [quality_id, *per_image])}
    missing = {gid: flags for gid, flags in per_image.items() if gid not in have}
    if missing:
        images = _read_generations(db, store, source.source_id, new)
        for gid, flags in _generation_flags(images, missing).items():
            rows.append(_flag_row(GENERATION, gid, quality_id, flags))
    return db.conn.executemany(_INSERT, rows).rowcount


# ------------------------------------------------------------------------------------------------ the command
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

    @property
    def note(self) -> str:
        return UNTRAINED_SCORER_NOTE if self.is_test_model else ""


def _has(target: str, alias: str, scorer_id: int | None, metric: str) -> str:
    return (f"EXISTS (SELECT 1 FROM scores x WHERE x.target = '{target}' AND x.target_id = {alias}.id "
            f"AND x.scorer_id = {int(_NO_ID if scorer_id is None else scorer_id)} AND x.metric = '{metric}')")


def _missing(db, stage: Score, label_id: int | None, quality_id: int | None) -> tuple[dict, dict, int]:
    """What is left to score, by source: ``{source_id: {"augmentations": {id: (label?, flags?)},
    "generations": {...}}}`` in source order, the number of images, and how many A have no true class."""
    todo: dict[int, dict[str, dict[int, tuple[bool, bool]]]] = {}
    unlabelled = 0
    count = 0
    for target, table in ((AUGMENTATION, "augmentations"), (GENERATION, "generations")):
        for item_id, source_id, label, origin, has_label, has_flags in db.execute(
                f"SELECT t.id, t.source_id, s.label, s.origin, {_has(target, 't', label_id, LABEL_PROB)}, "
                f"{_has(target, 't', quality_id, FLAGS)} FROM {table} t JOIN sources s ON s.id = t.source_id "
                "ORDER BY t.source_id, t.id"):
            labelled = stage.model is not None and stage.labelled(label, origin)
            unlabelled += target == AUGMENTATION and stage.model is not None and not labelled
            need = (labelled and not has_label, not has_flags)
            if any(need):
                todo.setdefault(source_id, {AUGMENTATION: {}, GENERATION: {}})[target][item_id] = need
                count += 1
    return dict(sorted(todo.items())), count, unlabelled


def _score_sources(workspace: Workspace, stage: Score, todo: dict, label_id: int | None,
                   quality_id: int) -> tuple[list[tuple], int, int, int]:
    """Rows for the scores missing on a few sources: (rows, A scored, Î scored, flagged)."""
    manifest, store = workspace.manifest, workspace.store
    labelled_images: list[tuple[str, int, np.ndarray, str]] = []
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
            for gid, (need_label, need_flags) in gens.items():
                if need_label:
                    labelled_images.append((GENERATION, gid, generated[gid], label))
                if need_flags:
                    per_image[gid] = quality.flags(generated[gid])
            if per_image:
                images = _read_generations(db, store, source_id, generated)
                for gid, flags in _generation_flags(images, per_image).items():
                    rows.append(_flag_row(GENERATION, gid, quality_id, flags))
                    flagged += bool(flags)
            augs = work[AUGMENTATION]
            for row in (manifest.list_augmentations(ids=list(augs)) if augs else []):
                final = workspace.final_image(row)
                need_label, need_flags = augs[row["id"]]
                if need_label:
                    labelled_images.append((AUGMENTATION, row["id"], final, label))
                if need_flags:
                    flags = quality.flags(final)
                    rows.append(_flag_row(AUGMENTATION, row["id"], quality_id, flags))
                    flagged += bool(flags)
    metrics = stage.label_metrics([w[2] for w in labelled_images], [w[3] for w in labelled_images])
    for (target, item_id, _, _), values in zip(labelled_images, metrics):
        rows += _label_rows(target, item_id, label_id, values)
    n_aug = sum(len(w[AUGMENTATION]) for w in todo.values())
    n_gen = sum(len(w[GENERATION]) for w in todo.values())
    return rows, n_aug, n_gen, flagged


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
    stage = Score(model, class_names=names, device=device, dtype=dtype, batch_size=batch_size)
    summary = ScoreSummary(scorer=model, is_test_model=stage.is_test_model)
    with workspace.manifest.session() as db:
        label_id = None if stage.label_spec is None else _find(db, stage.label_spec)
        quality_id = _find(db, stage.quality_spec)
        todo, total, summary.unlabelled = _missing(db, stage, label_id, quality_id)
        if todo:
            stage.load()  # before anything is written: an unavailable scorer fails in one sentence
            with write(db):
                label_id = None if stage.label_spec is None else _register(db, stage.label_spec)
                quality_id = _register(db, stage.quality_spec)
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
            rows, n_aug, n_gen, flagged = _score_sources(workspace, stage, chunk, label_id, quality_id)
            with write(db):
                db.conn.executemany(_INSERT, rows)
            summary.augmentations += n_aug
            summary.generations += n_gen
            summary.flagged += flagged
            done += size
            if progress is not None:
                progress(done, total)
            chunk, size = {}, 0
    summary.seconds = time.perf_counter() - started
    return summary
