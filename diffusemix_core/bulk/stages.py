"""The stages of a bulk run after the plan, and the small values that travel between them.

    plan (``plan.py``) → load → generate → compose (→ score, ``score_stage.py``) → commit

* :func:`load_source` (**load**; CPU, any thread): decode and validate the bytes; a bad file becomes a failed source;
* :class:`Generate` (**generate**; the model): Î for every slot without one, in one batched call;
* :class:`Compose` (**compose**; CPU, any thread): each slot's record (mix, drift) and the PNG bytes of what the
  store keeps (I, Î, fractal images; A and the fitted F are derived: see ``store.py``);
* :class:`Commit` (**commit**; the only writer): journal the files, write them, insert every row in ONE transaction.

Values: a :class:`Source` (one file, or one piece of a file with many slots) holds its :class:`Slot` s (one
augmentation each); a :class:`Batch` holds consecutive sources. They are plain dataclasses (picklable), and no stage
keeps hidden global state, so the local runner (``runner.py``) and the Ray runner (``ray_runner.py``) run the very
same functions.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..engine.diffusemix import Choice, Mixer
from ..errors import BadArgumentError, BadImageError, DiffuseMixError, ModelUnavailableError
from ..engine.images import image_key, load_image
from ..workspace.manifest import generation_cache_key, write
from ..curation.scores import ScoredSlot, insert_scores
from ..workspace.store import ImageStore
from ..workspace.thumbnails import Thumbnails, thumbnail_key, thumbnail_png

if TYPE_CHECKING:
    from ..engine.diffusemix import AugmentationRecord
    from ..engine.generation import GenerationSettings
    from ..engine.pix2pix import Pix2PixGenerator
    from ..workspace.folder import Workspace

__all__ = ["Batch", "Commit", "Compose", "Generate", "RunSummary", "Slot", "Source", "describe_change", "load_source"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ the values
@dataclass
class Slot:
    """One augmentation to make: its job, its drawn choice, and Î once there is one."""

    job_key: str
    slot: int | None
    choice: Choice
    prompt_text: str
    cache_key: str | None = None  # known once the source's pixels are
    generation_id: int | None = None  # an existing generation (Î cached in the store)
    generation_path: str | None = None
    generated_png: bytes | None = None  # the cached Î's bytes (they travel with the slot: no shared disk needed)
    generated: np.ndarray | None = None  # Î
    used_seed: int | None = None
    error: str | None = None  # generation failed: the slot is left for the next run
    record: AugmentationRecord | None = None  # composed
    fractal_path: str | None = None  # the fractal image in the store
    thumbnail: tuple[str, bytes] | None = None  # (key, PNG) of A's gallery preview (thumbnails.py)
    scores: dict | None = None  # label scores and flags of Î and A (score_stage.Score), stored by Commit


@dataclass
class Source:
    """One source file on its way through the stages."""

    rel: str  # path relative to the train dir (posix)
    label: str
    sha256: str = ""
    data: bytes | None = None  # the file's bytes, until decoded
    source_id: int | None = None  # its ok row, when the manifest has one
    pixels_sha256: str | None = None
    image: np.ndarray | None = None
    slots: list[Slot] = field(default_factory=list)
    error: str | None = None  # cannot be read or decoded
    error_recorded: bool = False  # the manifest has this failure already
    files: dict[str, bytes] = field(default_factory=dict)  # store path -> PNG bytes to write
    first: bool = True  # the file's first piece (plan.Planner): the one counted in the run's summary


@dataclass
class Batch:
    """Consecutive sources that move through the stages together."""

    index: int
    sources: list[Source]
    skipped: int = 0  # complete files passed over while this batch was planned
    model_seconds: float = 0.0
    load_seconds: float = 0.0

    @property
    def slots(self) -> int:
        return sum(len(s.slots) for s in self.sources)



@dataclass
class RunSummary:
    """What a bulk run did. ``images_ok`` counts sources that are usable (processed now or complete before)."""

    run_id: int
    images_total: int = 0
    images_processed: int = 0
    images_skipped: int = 0
    images_failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path relative to train dir, reason)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): not regular files, never read
    label_notes: list[str] = field(default_factory=list)  # class folders read as one class or renamed
    augmentations_planned: int = 0
    augmentations_added: int = 0
    generations_added: int = 0
    generations_reused: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0  # inside generator.generate
    load_seconds: float = 0.0  # loading the model (once)
    cancelled: bool = False
    settings_changed: list[str] = field(default_factory=list)  # what differs from the previous run's settings
    settings_details: list[str] = field(default_factory=list)  # the same, with the values: 'settings.steps 2 → 4'
    scorer: str | None = None  # the label scorer of the run's scores stage (None: no label scores)
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)  # CPU time per stage (plan, load, ...)

    @property
    def images_ok(self) -> int:
        return self.images_processed + self.images_skipped


def describe_change(name: str, before, after) -> str:
    """'settings.steps 2 → 4' ('prompts changed' for a value too long to show)."""
    texts = [json.dumps(v, ensure_ascii=False, default=str) if not isinstance(v, str) else v for v in (before, after)]
    texts = [t.rstrip("/").rsplit("/", 1)[-1] if t.startswith("/") else t for t in texts]  # a folder: its name only
    if max(len(t) for t in texts) > 40:
        return f"{name} changed"
    return f"{name} {texts[0]} → {texts[1]}"


# ------------------------------------------------------------------------------------------------ 2. load
def load_source(source: Source, settings_key: dict) -> Source:
    """Decode and validate the file's bytes and any cached Î; compute the cache keys (CPU; any thread)."""
    if source.error is not None or source.data is None:
        return source
    try:
        source.image = load_image(source.data)
    except BadImageError as exc:
        source.error = exc.reason
        return source
    finally:
        source.data = None
    source.pixels_sha256 = image_key(source.image)
    for slot in source.slots:
        slot.cache_key = generation_cache_key(source.pixels_sha256, slot.prompt_text, settings_key, slot.choice.seed)
        if slot.generated_png is not None:
            slot.generated = load_image(slot.generated_png)
    return source


# ------------------------------------------------------------------------------------------------ 3. generate
class Generate:
    """Î for every slot of a batch that has none: one batched model call (a callable class: a Ray actor too)."""

    def __init__(self, generator: Pix2PixGenerator, *, batch_size: int) -> None:
        self.generator, self.batch_size = generator, batch_size
        self._loaded = False

    def __call__(self, batch: Batch) -> Batch:
        from ..engine.generation import GenerationRequest

        wanted: dict[str, tuple[Source, Slot]] = {}
        for source in batch.sources:
            if source.image is None:
                continue
            for slot in source.slots:
                if slot.generated is None:
                    wanted.setdefault(slot.cache_key, (source, slot))
        if not wanted:
            return batch
        if not self._loaded:
            started = time.perf_counter()
            self.generator.load()
            batch.load_seconds += time.perf_counter() - started
            self._loaded = True
        keys = list(wanted)
        requests = [GenerationRequest(image=wanted[k][0].image, image_key=wanted[k][0].pixels_sha256,
                                      prompt_text=wanted[k][1].prompt_text, seed=wanted[k][1].choice.seed)
                    for k in keys]
        started = time.perf_counter()
        results = self._generate(requests)
        batch.model_seconds += time.perf_counter() - started
        made = {key: result for key, result in zip(keys, results)}
        for source in batch.sources:
            for slot in source.slots:
                if slot.generated is None and slot.cache_key in made:
                    result = made[slot.cache_key]
                    if isinstance(result, str):
                        slot.error = result
                    else:
                        slot.generated, slot.used_seed = result.image, result.used_seed
        return batch

    def _generate(self, requests: list) -> list:
        """One batched call; if a request fails after its retries, retry one by one and keep the failures' reasons."""
        try:
            return self.generator.generate(requests, batch_size=self.batch_size)
        except (ModelUnavailableError, BadArgumentError):
            raise
        except DiffuseMixError as exc:  # a degenerate output after its retries
            log.warning("a generation in this batch failed (%s); retrying its requests one by one", exc)
        results: list = []
        for request in requests:
            try:
                results.append(self.generator.generate([request], batch_size=1)[0])
            except (ModelUnavailableError, BadArgumentError):
                raise
            except DiffuseMixError as exc:
                results.append(f"generation failed ({exc}); it is retried on the next run")
        return results


# ------------------------------------------------------------------------------------------------ 4. compose
class Compose:
    """Each slot's record (mix, drift) and the PNG bytes of what the store keeps (CPU; any thread)."""

    def __init__(self, mixer: Mixer, settings: GenerationSettings) -> None:
        self.mixer, self.settings = mixer, settings
        self._fractal_files: dict[str, tuple[str, bytes]] = {}
        self._lock = threading.Lock()

    def fractal_file(self, fractal_id: str) -> tuple[str, bytes]:
        """(store path, PNG bytes) of a library fractal: encoded once per run."""
        with self._lock:
            if fractal_id not in self._fractal_files:
                self._fractal_files[fractal_id] = ImageStore.encode(self.mixer.fractals.get(fractal_id))
            return self._fractal_files[fractal_id]

    def __call__(self, source: Source) -> Source:
        if source.image is None:
            return source
        if source.source_id is None:
            source.files.update([ImageStore.encode(source.image)])
        for slot in source.slots:
            if slot.generated is None:
                continue
            slot.record = self.mixer.compose(source.image, slot.generated, slot.choice, settings=self.settings,
                                             used_seed=slot.used_seed, prompt_text=slot.prompt_text,
                                             label=source.label, source=source.rel)
            if slot.generation_id is None:
                slot.generation_path, png = ImageStore.encode(slot.generated)
                source.files[slot.generation_path] = png
            slot.fractal_path, png = self.fractal_file(slot.choice.fractal)
            source.files[slot.fractal_path] = png
            record = slot.record
            slot.thumbnail = (thumbnail_key(ImageStore.relpath(source.pixels_sha256), slot.generation_path,
                                            slot.fractal_path, record.mask_kind, record.lam, record.feather),
                              thumbnail_png(record.final))
        return source


# ------------------------------------------------------------------------------------------------ 5. commit
class Commit:
    """The only writer: a batch's files (journalled first), then all its rows in one transaction."""

    def __init__(self, workspace: Workspace, db, *, run_id: int, summary: RunSummary) -> None:
        self.workspace, self.db, self.run_id, self.summary = workspace, db, run_id, summary

    def __call__(self, batch: Batch) -> int:
        """Commit `batch`; returns how many slots it resolved (made, or given up with their image)."""
        ws, summary = self.workspace, self.summary
        files = {rel: data for source in batch.sources for rel, data in source.files.items()}
        relpaths = sorted(files)
        ws.manifest.journal(relpaths, self.db)
        ws.store.put_many(sorted(files.items()))
        added = generations = 0
        with write(self.db) as db:
            for source in batch.sources:
                if source.error is not None:
                    if not source.error_recorded:
                        ws.manifest.insert_failed_source(db, path=source.rel, label=source.label,
                                                         sha256=source.sha256, error=source.error)
                    continue
                if source.source_id is None:
                    h, w = source.image.shape[:2]
                    source.source_id = ws.manifest.insert_source(
                        db, path=source.rel, label=source.label, sha256=source.sha256,
                        pixels_sha256=source.pixels_sha256, width=w, height=h,
                        image_path=ImageStore.relpath(source.pixels_sha256), origin="dataset")
                for slot in source.slots:
                    if slot.record is None:
                        continue
                    if slot.generation_id is None:
                        slot.generation_id = ws.manifest.insert_generation(
                            db, slot.record, source_id=source.source_id, cache_key=slot.cache_key,
                            path=slot.generation_path)
                        generations += 1
                    else:
                        summary.generations_reused += 1
                    _, new = ws.manifest.insert_augmentation(
                        db, slot.record, source_id=source.source_id, generation_id=slot.generation_id,
                        job_key=slot.job_key, slot=slot.slot, fractal_path=slot.fractal_path, run_id=self.run_id)
                    added += new
                _insert_scores(db, ws.store, source)  # what the scores stage found, if it ran
            ws.manifest.unjournal(db, relpaths)
        previews = Thumbnails(ws.path)  # derived data: written after the rows, never journalled
        for source in batch.sources:
            for slot in source.slots:
                if slot.record is not None and slot.thumbnail is not None:
                    previews.put(*slot.thumbnail)
        for source in batch.sources:
            if source.error is not None:
                if source.first:
                    summary.images_failed += 1
                    summary.failures.append((source.rel, source.error))
            else:
                summary.images_processed += source.first
                summary.failures.extend((source.rel, slot.error) for slot in source.slots if slot.error)
        summary.images_skipped += batch.skipped
        summary.augmentations_added += added
        summary.generations_added += generations
        summary.model_seconds += batch.model_seconds
        summary.load_seconds += batch.load_seconds
        return batch.slots


def _insert_scores(db, store: ImageStore, source: Source) -> int:
    """Store the scores the scores stage (``score_stage.Score``) put on the slots of one committed source."""
    slots = [ScoredSlot(s.job_key, s.generation_id, s.scores, s.generated) for s in source.slots
             if s.scores is not None and s.record is not None and s.generation_id is not None]
    return insert_scores(db, store, source.source_id, slots)
