"""Curation at scale, the stored scores: label-consistency scores and quality flags of Î and A, and their scorers.
Does each augmentation still show its class? (Scoring what is missing: ``score_workspace.py``; reading the scores:
``queries.py``; the bulk run's scores stage: ``bulk/score_stage.py``.)

The story, top to bottom:

1. **storage** (tables in ``manifest.py``, docs/workspace.md "Scores"): ``scorers`` holds one row per scorer
   configuration (a CLIP model with its class names and templates, or the quality flags with their thresholds);
   ``scores`` is long format, one row per (image, scorer, metric): the image is Î (``target = 'generation'``) or A
   (``target = 'augmentation'``). A new scorer adds rows and never touches another scorer's;
2. **class names**: the workspace's labels (remembered in ``meta`` as ``class_labels``, so every command scores
   over the same classes) named by ``scorers.class_names``, with the mapping file of ``--class-map`` remembered
   in ``meta`` as ``class_map``;
3. **scoring**: :class:`Scoring` holds one configuration (its specs, the label scorer loaded on first use) and
   gives the label metrics of images;
4. **writing**: the rows of one source's scores (:func:`insert_scores`, used by the bulk run's commit), and the
   helpers the ``score`` command shares with it.

Metrics: ``label_prob`` (probability of the true class, softmax over all class names), ``label_rank`` (1 = CLIP's
top choice), ``top_prob`` (CLIP's top choice's probability; ``text`` = its class name) for every labelled Î and
A; ``flags`` (``value`` = how many, ``text`` = comma-separated ``black``, ``blank``, ``low_information``, and for Î
``near_duplicate``; ``''`` when clean) for every Î and A. Near-duplicates are judged among all the Î of one source,
in generation id order (``quality.near_duplicates``: the first of a set stays unflagged), so scoring in a bulk run
and scoring later give the same flags.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import quality
from ..errors import BadArgumentError
from ..workspace.manifest import now, write
from ..engine.test_models import TEST_MODELS, TEST_SCORERS, UNTRAINED_SCORER_NOTE
from ..workspace.labels import UNLABELLED
from .class_names import class_names, load_class_mapping
from .embeddings import INSERT_EMBEDDING, SOURCE, embedding_rows
from .label_scorer import DEFAULT_BATCH_SIZE, DEFAULT_SCORER, DEFAULT_TEMPLATES, LabelScorer

if TYPE_CHECKING:
    from ..workspace.store import ImageStore
    from ..workspace.folder import Workspace

__all__ = [
    "AUTO",
    "GENERATION",
    "AUGMENTATION",
    "LABEL_METRICS",
    "NONE",
    "ScoredSlot",
    "ScorerSpec",
    "Scoring",
    "insert_scores",
    "latest_scorer",
    "list_scorers",
    "resolve_scorer",
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


def register_scorer(db, spec: ScorerSpec) -> int:
    """The id of `spec`'s row in ``scorers``, inserted if new (inside the caller's write transaction)."""
    db.execute("INSERT OR IGNORE INTO scorers (kind, model, settings, key, is_test_model, created_at) "
               "VALUES (?, ?, ?, ?, ?, ?)", [spec.kind, spec.model, spec.settings, spec.key, int(spec.is_test_model),
                                             now()])
    return db.execute("SELECT id FROM scorers WHERE key = ?", [spec.key]).fetchone()[0]


def find_scorer(db, spec: ScorerSpec) -> int | None:
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

# ------------------------------------------------------------------------------------------------ scoring
def _label_metrics(score) -> dict[str, tuple[float, str | None]]:
    return {LABEL_PROB: (score.prob, None), LABEL_RANK: (float(score.rank), None),
            TOP_PROB: (score.top_prob, score.top_name)}


class Scoring:
    """One scoring configuration: the label scorer (a CLIP model over the class names; ``model=None``: none) and the
    quality flags, with their specs as stored in ``scorers``.

    The constructor takes plain settings only (:meth:`settings` gives them back), the model loads on first use,
    and pickling carries the settings, never the model (a Ray worker rebuilds it). The ``score`` command uses it
    directly; the bulk run's scores stage (``bulk/score_stage.Score``) applies it to the slots of a batch.
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
        """The constructor's keyword arguments (``type(s)(**s.settings())`` is equal), e.g. for Ray's
        ``fn_constructor_kwargs``."""
        return {"model": self.model, "class_names": dict(self.class_names), "device": self.device,
                "dtype": self.dtype, "batch_size": self.batch_size, "revision": self.revision,
                "templates": list(self.templates)}

    def __getstate__(self) -> dict[str, Any]:
        return self.settings()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.pop("model"), **state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, {len(self.class_names)} classes)"

    @property
    def note(self) -> str:
        return UNTRAINED_SCORER_NOTE if self.is_test_model else ""

    def load(self) -> Scoring:
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
        return self.label_metrics_embedded(images, labels)[0]

    def label_metrics_embedded(self, images: Sequence[np.ndarray],
                               labels: Sequence[str]) -> tuple[list[dict], np.ndarray | None]:
        """:meth:`label_metrics` and the (n, d) float32 image embeddings computed on the way (None without a
        label scorer), which ``embeddings.py`` stores."""
        if self.model is None or not images:
            return [{} for _ in images], None
        self.load()
        names = list(dict.fromkeys(self.class_names.values()))
        scores, embeds = self._scorer.score_embedded(list(images), [self.class_names[label] for label in labels],
                                                     names)
        return [_label_metrics(s) for s in scores], embeds

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray | None:
        """(n, d) float32 normalised embeddings of `images` by the label scorer (None without one)."""
        if self.model is None:
            return None
        self.load()
        return self._scorer.image_embeddings(list(images)).cpu().float().numpy()

    def labelled(self, label: str | None, origin: str = "dataset") -> bool:
        """Whether an image of this source has a true class to score against."""
        return label in self.class_names and not (origin == "app" and label == UNLABELLED)


# ------------------------------------------------------------------------------------------------ storing
INSERT_SCORE = ("INSERT OR IGNORE INTO scores (target, target_id, scorer_id, metric, value, text) "
           "VALUES (?, ?, ?, ?, ?, ?)")


def flag_row(target: str, target_id: int, scorer_id: int, flags: Sequence[str]) -> tuple:
    return (target, target_id, scorer_id, FLAGS, float(len(flags)), ",".join(flags))


def label_rows(target: str, target_id: int, scorer_id: int, metrics: Mapping) -> list[tuple]:
    return [(target, target_id, scorer_id, metric, float(value), text) for metric, (value, text) in metrics.items()]


def generation_flags(images: dict[int, np.ndarray | None], per_image: Mapping[int, list[str]]) -> dict[int, list]:
    """Flags of the Î in `per_image` (their per-image flags, plus near_duplicate judged among `images`: every
    readable Î of one source by generation id; None for one that cannot be read)."""
    ids = [gid for gid in sorted(images) if images[gid] is not None]
    duplicate = dict(zip(ids, quality.near_duplicates([images[gid] for gid in ids])))
    return {gid: list(flags) + ([quality.FLAG_NEAR_DUPLICATE] if duplicate.get(gid) else [])
            for gid, flags in per_image.items()}


def read_generations(db, store: ImageStore, source_id: int, have: Mapping[int, np.ndarray]) -> dict:
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


class ScoredSlot(NamedTuple):
    """What the bulk run's scores stage found for one committed augmentation (its ``job_key``), ready to store."""

    job_key: str
    generation_id: int
    scores: Mapping  # {"label": ScorerSpec | None, "quality": ScorerSpec, GENERATION: {...}, AUGMENTATION: {...}}
    generated: np.ndarray | None  # Î, or None when it travelled without its array (read from the store)


def insert_scores(db, store: ImageStore, source_id: int, slots: Sequence[ScoredSlot]) -> int:
    """Store the scores of one source's committed slots (inside the caller's transaction, after the source's rows);
    returns how many rows were added. A score already stored is kept."""
    if not slots:
        return 0
    label_spec, q_spec = slots[0].scores["label"], slots[0].scores["quality"]
    label_id = None if label_spec is None else register_scorer(db, label_spec)
    quality_id = register_scorer(db, q_spec)
    rows: list[tuple] = []
    embedded: list[tuple] = []
    new: dict[int, np.ndarray] = {}
    per_image: dict[int, list[str]] = {}
    for slot in slots:
        aug_id = db.execute("SELECT id FROM augmentations WHERE source_id = ? AND job_key = ?",
                            [source_id, slot.job_key]).fetchone()[0]
        final, generated = slot.scores[AUGMENTATION], slot.scores[GENERATION]
        rows.append(flag_row(AUGMENTATION, aug_id, quality_id, final["flags"]))
        if label_id is not None and final["label"]:
            rows += label_rows(AUGMENTATION, aug_id, label_id, final["label"])
        if label_id is not None and generated["label"]:
            rows += label_rows(GENERATION, slot.generation_id, label_id, generated["label"])
        if label_id is not None:
            for target, target_id, vector in ((AUGMENTATION, aug_id, final.get("embedding")),
                                              (GENERATION, slot.generation_id, generated.get("embedding")),
                                              (SOURCE, source_id, slot.scores.get(SOURCE))):
                if vector is not None:
                    embedded += embedding_rows(target, [target_id], label_id, vector[None])
        if slot.generated is not None:
            new.setdefault(slot.generation_id, slot.generated)
        per_image.setdefault(slot.generation_id, generated["flags"])
    marks = ",".join("?" * len(per_image))
    have = {r[0] for r in db.execute(
        f"SELECT target_id FROM scores WHERE target = 'generation' AND scorer_id = ? AND metric = 'flags' "
        f"AND target_id IN ({marks})", [quality_id, *per_image])}
    missing = {gid: flags for gid, flags in per_image.items() if gid not in have}
    if missing:
        images = read_generations(db, store, source_id, new)
        for gid, flags in generation_flags(images, missing).items():
            rows.append(flag_row(GENERATION, gid, quality_id, flags))
    db.conn.executemany(INSERT_EMBEDDING, embedded)
    return db.conn.executemany(INSERT_SCORE, rows).rowcount
