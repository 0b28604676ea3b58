"""The bulk run: augment every image of ``train/<class>/<image>`` into a workspace, as a pipeline of stages.

    plan → load → generate → compose → commit

* **plan** (one thread; the manifest's reader): walk the files in sorted order, read and hash each file, ask the
  manifest which of its slots (``slot:0``…``slot:m-1``, or ``prompt:<p>``) are missing, draw each missing slot's
  :class:`Choice` from an rng seeded by (run seed, file sha256, slot), and look up Î already generated with the
  same cache key. A finished image is skipped without being decoded.
* **load** (CPU, parallel): decode and validate the bytes (a bad file becomes a failed source with its reason),
  hash the pixels, decode cached Î.
* **generate** (the model, batched): Î for every slot that has none, each distinct prompt encoded once and each
  image VAE-encoded once (``generation.py``); a degenerate output is retried, then the slot is left for next run.
* **compose** (CPU, parallel): the record of each slot (mix, drift: ``engine.Mixer.compose``) and the PNG bytes
  of what the store keeps (I, Î, fractal images; A and the fitted F are derived: see ``store.py``).
* **commit** (the caller's thread, the only writer): journal the files, write them, insert every row of the batch
  in ONE transaction. A killed run leaves no half-written file and no duplicate; rerunning finishes the job.

The stages are plain functions over small dataclasses with no hidden global state: :func:`run_augment` runs them
concurrently in threads with bounded queues (``threaded_stages.py``: while the model generates batch k, batch k+1
is decoded and batch k−1 is composed and committed), or one after another with ``threads=1`` (same results, byte
for byte); the Ray engine runs the very same functions as Ray Data operators.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from .checks import check_int
from .engine import Choice, Mixer, check_seed
from .errors import BadArgumentError, BadImageError, DiffuseMixError, ModelUnavailableError
from .images import IMAGE_EXTENSIONS, image_key, load_image
from .manifest import Manifest, generation_cache_key, now, write
from .mixing import check_lam
from .store import ImageStore
from .threaded_stages import run_stages

if TYPE_CHECKING:
    from .engine import AugmentationRecord
    from .fractals import FractalLibrary
    from .generation import GenerationSettings, Pix2PixGenerator
    from .prompts import PromptLibrary
    from .workspace import Workspace

__all__ = ["RunProgress", "RunSummary", "check_train_dir", "run_augment", "scan_train_dir"]

log = logging.getLogger(__name__)

_IGNORED_DIRS = {"__MACOSX"}
_CPU_WORKERS = max(1, min(8, os.cpu_count() or 1))


# ------------------------------------------------------------------------------------------------ the dataset
def check_train_dir(train_dir: str | Path) -> Path:
    """`train_dir` as a Path; BadArgumentError if it is not a folder."""
    root = Path(train_dir)
    if not root.is_dir():
        raise BadArgumentError(
            f"train dir '{root}' is not a folder; pass --train-dir DIR holding one folder per class "
            "(DIR/<class>/<image>)."
        )
    return root


def scan_train_dir(train_dir: str | Path) -> list[tuple[str, str]]:
    """(relative posix path, label) of every image file under ``train_dir/<class>/``, sorted.

    The label is the class folder's name exactly as on disk. Hidden files and folders, ``__MACOSX`` and files
    whose extension is not an image extension are ignored; class folders are walked recursively.
    """
    root = check_train_dir(train_dir)
    found: list[tuple[str, str]] = []
    stray = 0
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in _IGNORED_DIRS:
            continue
        if not entry.is_dir():
            stray += entry.is_file()
            continue
        for dirpath, dirnames, filenames in os.walk(entry.path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _IGNORED_DIRS)
            for name in sorted(filenames):
                if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                found.append((Path(dirpath, name).relative_to(root).as_posix(), entry.name))
    if stray:
        log.warning("ignored %d file(s) directly in %s: images must be in class folders", stray, root)
    found.sort()
    return found


def job_keys(per_image: int, prompts: list[str] | None) -> list[tuple[str, int | None, str | None]]:
    """(job_key, slot, fixed prompt) for every augmentation an image should have."""
    if prompts is not None:
        return [(f"prompt:{p}", None, p) for p in prompts]
    return [(f"slot:{i}", i, None) for i in range(per_image)]


def slot_rng(seed: int, file_sha256: str, job_key: str) -> np.random.Generator:
    """The rng of one augmentation slot: depends on nothing but the run seed, the file and the slot."""
    digest = hashlib.sha256(f"{file_sha256}\0{job_key}".encode("utf-8")).digest()
    words = np.frombuffer(digest[:16], dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


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
class RunProgress:
    """Where a run is, in augmentations (a slot of a failed image counts as done: nothing is left to do for it)."""

    done: int
    total: int
    seconds: float

    @property
    def rate(self) -> float:
        """Augmentations per second so far."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def describe(self) -> str:
        eta = self.eta_seconds
        left = "" if eta is None else f", {_duration(eta)} left"
        return f"{self.done}/{self.total} augmentations, {self.rate:.2f}/s{left}"


@dataclass
class RunSummary:
    """What a bulk run did. ``images_ok`` counts sources that are usable (processed now or complete before)."""

    run_id: int
    images_total: int = 0
    images_processed: int = 0
    images_skipped: int = 0
    images_failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path relative to train dir, reason)
    augmentations_planned: int = 0
    augmentations_added: int = 0
    generations_added: int = 0
    generations_reused: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0  # inside generator.generate
    load_seconds: float = 0.0  # loading the model (once)
    cancelled: bool = False
    settings_changed: list[str] = field(default_factory=list)  # what differs from the previous run's settings

    @property
    def images_ok(self) -> int:
        return self.images_processed + self.images_skipped


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# ------------------------------------------------------------------------------------------------ 1. plan
class Planner:
    """Which slots each file still needs, with their choices and any Î already made (reads the manifest only)."""

    def __init__(self, manifest: Manifest, store: ImageStore, train_dir: Path, mixer: Mixer,
                 jobs: list[tuple[str, int | None, str | None]], *, seed: int, settings_key: dict) -> None:
        self.manifest, self.store, self.train_dir, self.mixer = manifest, store, train_dir, mixer
        self.jobs, self.seed, self.settings_key = jobs, seed, settings_key

    def missing_estimate(self, files: Sequence[tuple[str, str]]) -> int:
        """Slots still to make if no file changed since the last run (the progress bar's total)."""
        done: dict[str, set[str]] = {}
        with self.manifest.session() as db:
            for path, job_key in db.execute(
                    "SELECT s.path, a.job_key FROM augmentations a JOIN sources s ON s.id = a.source_id "
                    "WHERE s.origin = 'dataset'"):
                done.setdefault(path, set()).add(job_key)
        wanted = {job for job, _, _ in self.jobs}
        return sum(len(wanted - done.get(rel, set())) for rel, _ in files)

    def batches(self, files: Sequence[tuple[str, str]], batch_size: int,
                cancel: threading.Event | None = None) -> Iterator[Batch]:
        """Batches of `batch_size` sources that need work; complete files are counted in ``Batch.skipped``."""
        index, sources, skipped = 0, [], 0
        with self.manifest.session() as db:
            for rel, label in files:
                if cancel is not None and cancel.is_set():
                    return
                source = self.plan_source(db, rel, label)
                if source is None:
                    skipped += 1
                    continue
                sources.append(source)
                if len(sources) == batch_size:
                    yield Batch(index, sources, skipped)
                    index, sources, skipped = index + 1, [], 0
        if sources or skipped:
            yield Batch(index, sources, skipped)

    def plan_source(self, db, rel: str, label: str) -> Source | None:
        """The Source of one file, or None when every slot of it is in the manifest already."""
        source = Source(rel=rel, label=label)
        try:
            source.data = (self.train_dir / rel).read_bytes()
        except OSError as exc:
            source.error, source.error_recorded = f"cannot read the file ({exc.strerror or exc})", True
            return source
        source.sha256 = hashlib.sha256(source.data).hexdigest()
        row = db.execute("SELECT id, status, error, pixels_sha256 FROM sources WHERE path = ? AND sha256 = ?",
                         [rel, source.sha256]).fetchone()
        if row is not None and row[1] == "failed":
            source.data, source.error, source.error_recorded = None, row[2], True
            return source
        existing: set[str] = set()
        if row is not None:
            source.source_id, source.pixels_sha256 = row[0], row[3]
            existing = {r[0] for r in db.execute("SELECT job_key FROM augmentations WHERE source_id = ?", [row[0]])}
        missing = [job for job in self.jobs if job[0] not in existing]
        if not missing:
            return None
        for job_key, slot, fixed_prompt in missing:
            choice = self.mixer.sample(slot_rng(self.seed, source.sha256, job_key), 1, prompt=fixed_prompt)[0]
            source.slots.append(Slot(job_key=job_key, slot=slot, choice=choice,
                                     prompt_text=self.mixer.prompts.render(choice.prompt)))
        if source.pixels_sha256 is not None:
            self._find_cached(db, source)
        return source

    def _find_cached(self, db, source: Source) -> None:
        """Attach the Î already in the workspace (same cache key) to the slots, with their bytes."""
        for slot in source.slots:
            slot.cache_key = generation_cache_key(source.pixels_sha256, slot.prompt_text, self.settings_key,
                                                  slot.choice.seed)
            row = db.execute("SELECT id, path, seed FROM generations WHERE cache_key = ?", [slot.cache_key]).fetchone()
            if row is not None and self.store.is_relpath(row[1]) and self.store.abspath(row[1]).exists():
                slot.generation_id, slot.generation_path, slot.used_seed = row
                slot.generated_png = self.store.read_bytes(row[1])


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
        from .generation import GenerationRequest

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
            ws.manifest.unjournal(db, relpaths)
        for source in batch.sources:
            if source.error is not None:
                summary.images_failed += 1
                summary.failures.append((source.rel, source.error))
            else:
                summary.images_processed += 1
                summary.failures.extend((source.rel, slot.error) for slot in source.slots if slot.error)
        summary.images_skipped += batch.skipped
        summary.augmentations_added += added
        summary.generations_added += generations
        summary.model_seconds += batch.model_seconds
        summary.load_seconds += batch.load_seconds
        return batch.slots


# ------------------------------------------------------------------------------------------------ the run
def run_augment(
    workspace: Workspace,
    train_dir: str | Path,
    *,
    per_image: int = 1,
    prompts: PromptLibrary | None = None,
    fractals: FractalLibrary | None = None,
    lam: float = 0.2,
    settings: GenerationSettings | None = None,
    batch_size: int = 4,
    seed: int = 0,
    all_prompts: bool = False,
    generator: Pix2PixGenerator | None = None,
    progress: Callable[[RunProgress], None] | None = None,
    cancel: threading.Event | None = None,
    feather: int = 0,
    threads: int | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> RunSummary:
    """Augment every image of ``train_dir/<class>/`` `per_image` times into `workspace`, resuming what exists.

    ``progress(RunProgress)`` is called after every committed batch; ``cancel.is_set()`` stops cleanly: no new
    batch is started, what the model has made is committed. Bad images are recorded as failed sources and the run
    goes on. ``threads=1`` runs the stages one after another in this thread (same results byte for byte);
    otherwise they run concurrently. The workspace is locked for the run (a second run waits, ``on_wait`` is told
    who holds it) and its manifest is backed up first. Raises BadArgumentError for bad arguments.
    """
    from .generation import GenerationSettings, Pix2PixGenerator

    per_image = check_int("per_image", per_image, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    lam, seed = check_lam(lam), check_seed(seed)
    files = scan_train_dir(train_dir)
    if not files:
        raise BadArgumentError(
            f"no image files found in '{train_dir}'; the layout is DIR/<class>/<image> with extensions such as "
            ".png/.jpg."
        )
    library = prompts if prompts is not None else workspace.manifest.get_prompt_library()
    library.validate()
    mixer = Mixer(prompts=library, fractals=fractals, lam=lam, feather=feather, seed=seed)
    if generator is None:
        generator = Pix2PixGenerator(settings or GenerationSettings())
    settings_key = generator.settings.cache_key()
    jobs = job_keys(per_image, library.enabled() if all_prompts else None)
    args = {"per_image": per_image, "all_prompts": all_prompts, "seed": seed, "lam": lam, "feather": feather,
            "batch_size": batch_size, "settings": settings_key, "prompts": library.to_dict(),
            "fractals": getattr(mixer.fractals, "origin", "")}
    with workspace.run_lock(f"augment of {Path(train_dir).name}", on_wait=on_wait):
        workspace.manifest.set_prompt_library(library)  # records the library in use
        workspace.gc()  # files of a killed run that never got their rows
        workspace.backup("augment")
        return _run(workspace, Path(train_dir), files, mixer, generator, jobs, args, seed=seed,
                    batch_size=batch_size, progress=progress, cancel=cancel, threads=threads)


def _run(workspace: Workspace, train_dir: Path, files, mixer: Mixer, generator, jobs, args: dict, *, seed: int,
         batch_size: int, progress, cancel, threads: int | None) -> RunSummary:
    started = time.perf_counter()
    summary = RunSummary(run_id=0, images_total=len(files))
    planner = Planner(workspace.manifest, workspace.store, train_dir, mixer, jobs, seed=seed,
                      settings_key=args["settings"])
    summary.augmentations_planned = planner.missing_estimate(files)
    db = workspace.manifest.connect()  # the writer's connection for the whole run
    try:
        with write(db):
            summary.run_id = db["runs"].insert(
                {"started_at": now(), "train_dir": str(train_dir.resolve()), "args": json.dumps(args, ensure_ascii=False),
                 "images_total": len(files)}).last_pk
        summary.settings_changed = _settings_changed(db, summary.run_id, args)
        commit = Commit(workspace, db, run_id=summary.run_id, summary=summary)
        generate = Generate(generator, batch_size=batch_size)
        compose = Compose(mixer, generator.settings)
        done = 0
        if progress is not None:
            progress(RunProgress(0, summary.augmentations_planned, 0.0))
        for batch in _stages(planner, files, batch_size, generate, compose, args["settings"], cancel, threads):
            done += commit(batch)
            if progress is not None:
                total = max(summary.augmentations_planned, done)
                progress(RunProgress(done, total, time.perf_counter() - started))
        summary.cancelled = bool(cancel is not None and cancel.is_set())
        if summary.cancelled:
            log.info("run cancelled after %d augmentation(s)", done)
    finally:
        try:
            with write(db):
                db["runs"].update(summary.run_id, {
                    "finished_at": now(), "images_failed": summary.images_failed,
                    "augmentations_added": summary.augmentations_added,
                    "generations_added": summary.generations_added,
                    "generations_reused": summary.generations_reused, "cancelled": int(summary.cancelled)})
        finally:
            db.conn.close()
            summary.seconds = time.perf_counter() - started
    return summary


def _stages(planner: Planner, files, batch_size: int, generate: Generate, compose: Compose, settings_key: dict,
            cancel: threading.Event | None, threads: int | None) -> Iterator[Batch]:
    """The batches, planned, loaded, generated and composed: in this thread, or concurrently (then in order)."""
    cancelled = lambda: cancel is not None and cancel.is_set()  # noqa: E731

    def generate_unless_cancelled(batch: Batch) -> Batch | None:
        return None if cancelled() else generate(batch)

    if threads == 1:
        for batch in planner.batches(files, batch_size, cancel):
            for source in batch.sources:
                load_source(source, settings_key)
            batch = generate_unless_cancelled(batch)
            if batch is None:
                return
            for source in batch.sources:
                compose(source)
            yield batch
        return

    pool = ThreadPoolExecutor(max_workers=threads or _CPU_WORKERS, thread_name_prefix="bulk-cpu")
    try:
        def load(batch: Batch) -> Batch:
            list(pool.map(lambda s: load_source(s, settings_key), batch.sources))
            return batch

        def compose_batch(batch: Batch | None) -> Batch | None:
            if batch is not None:
                list(pool.map(compose, batch.sources))
            return batch

        for batch in run_stages(planner.batches(files, batch_size, cancel), [load, generate_unless_cancelled,
                                                                            compose_batch],
                                names=["load", "generate", "compose"]):
            if batch is not None:
                yield batch
    finally:
        pool.shutdown(wait=True)


def _settings_changed(db, run_id: int, args: dict) -> list[str]:
    """Existing slots are never redone: say so when a run's settings differ from the previous run's."""
    previous = db.execute("SELECT args FROM runs WHERE id < ? ORDER BY id DESC LIMIT 1", [run_id]).fetchone()
    if previous is None:
        return []
    old = json.loads(previous[0] or "{}")
    changed = sorted(k for k in ("seed", "lam", "feather", "settings", "prompts", "fractals", "all_prompts")
                     if old.get(k) != args.get(k))
    if changed:
        log.warning(
            "this run's %s differ from the previous run's: augmentations already in the workspace are kept as they "
            "are and only missing slots use the new values (use a new workspace to redo everything)",
            ", ".join(changed),
        )
    return changed
