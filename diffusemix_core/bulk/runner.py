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
* **score** (optional, ``scorer=``; ``scores.Score``): label consistency (CLIP) and quality flags of Î and A; the
  rows go in with the batch's.
* **commit** (the caller's thread, the only writer): journal the files, write them, insert every row of the batch
  in ONE transaction. A killed run leaves no half-written file and no duplicate; rerunning finishes the job.

The stages are plain functions over small dataclasses with no hidden global state: :func:`run_augment` runs them
concurrently in threads with bounded queues (``threaded_stages.py``: while the model generates batch k, batch k+1
is decoded and batch k−1 is composed and committed), or one after another with ``threads=1`` (same results, byte
for byte); the Ray engine runs the very same functions as Ray Data operators.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from .stages import Batch, Commit, Compose, Generate, Planner, RunSummary, job_keys, load_source
from ..checks import check_int
from .cpu_share import CpuShare
from ..engine.diffusemix import Mixer, check_seed
from ..errors import BadArgumentError
from ..engine.images import IGNORED_DIRS, IMAGE_EXTENSIONS
from ..workspace.manifest import now, write
from ..engine.mixing import check_lam
from ..curation.scores import Score, score_stage
from .threads import run_stages

if TYPE_CHECKING:
    from ..engine.fractals import FractalLibrary
    from ..engine.generation import GenerationSettings, Pix2PixGenerator
    from ..engine.prompts import PromptLibrary
    from ..workspace.folder import Workspace

__all__ = ["RunProgress", "RunSummary", "check_train_dir", "run_augment", "scan_train_dir"]

log = logging.getLogger(__name__)

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
        if entry.name.startswith(".") or entry.name in IGNORED_DIRS:
            continue
        if not entry.is_dir():
            stray += entry.is_file()
            continue
        for dirpath, dirnames, filenames in os.walk(entry.path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in IGNORED_DIRS)
            for name in sorted(filenames):
                if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                found.append((Path(dirpath, name).relative_to(root).as_posix(), entry.name))
    if stray:
        log.warning("ignored %d file(s) directly in %s: images must be in class folders", stray, root)
    found.sort()
    return found


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



def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


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
    batch_size: int | str = 4,
    seed: int = 0,
    all_prompts: bool = False,
    generator: Pix2PixGenerator | None = None,
    progress: Callable[[RunProgress], None] | None = None,
    cancel: threading.Event | None = None,
    feather: int = 0,
    threads: int | None = None,
    on_wait: Callable[[str], None] | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
    stall_timeout: float | None = None,
    generator_factory: Callable[[], Pix2PixGenerator] | None = None,
    scorer: str | Score | None = None,
    class_map: str | Path | None = None,
) -> RunSummary:
    """Augment every image of ``train_dir/<class>/`` `per_image` times into `workspace`, resuming what exists.

    ``progress(RunProgress)`` is called after every committed batch; ``cancel.is_set()`` stops cleanly: no new
    batch is started, what the model has made is committed. Bad images are recorded as failed sources and the run
    goes on. ``threads=1`` runs the stages one after another in this thread (same results byte for byte);
    otherwise they run concurrently. The workspace is locked for the run (a second run waits, ``on_wait`` is told
    who holds it) and its manifest is backed up first. Raises BadArgumentError for bad arguments.

    ``engine="ray"`` runs the same stages on a Ray cluster (``bulk_ray.py``, docs/cluster.md): ``ray_address``
    (None: ``ray.init``'s default; ``"auto"``; ``"HOST:PORT"``; from a node of the cluster), ``workers`` actors with
    ``gpus_per_worker`` GPUs and ``cpus_per_worker`` CPUs each; ``stall_timeout`` seconds without a batch back stop
    the run (``ray_runner.RayEngine``). Each worker builds its generator from `settings`
    (``generator_factory``, a test and benchmark hook, builds it instead; `generator` must then be None).

    ``scorer`` (``auto``, a CLIP model id or folder, or a ``scores.Score``; None or ``none``: no scores) adds the
    scores stage after compose: label consistency and quality flags of every Î and A (``scores.score_stage``;
    ``class_map``: a class-name mapping file, remembered in the workspace).
    """
    from ..engine.generation import GenerationSettings, Pix2PixGenerator

    per_image = check_int("per_image", per_image, minimum=1)
    auto_batch = batch_size == "auto"
    if auto_batch and engine == "ray":
        raise BadArgumentError("--batch-size auto measures this machine's GPU; with --engine ray give a number "
                               "that fits the workers' GPUs (e.g. what a local run with auto chose).")
    batch_size = 1 if auto_batch else check_int("batch_size", batch_size, minimum=1)
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
    ray_engine = None
    if engine == "ray":
        from .ray_runner import RayEngine

        if generator is not None:
            raise BadArgumentError("engine='ray' builds one generator per worker: pass settings= (not generator=).")
        ray_engine = RayEngine(address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
                               cpus_per_worker=cpus_per_worker, generator_factory=generator_factory,
                               stall_timeout=stall_timeout)
        generator = generator_factory() if generator_factory is not None else None  # its settings; never loaded here
    elif engine != "local":
        raise BadArgumentError(f"engine must be 'local' or 'ray', got {engine!r}.")
    if generator is None:
        generator = Pix2PixGenerator(settings or GenerationSettings())
    if auto_batch:
        batch_size = generator.auto_batch_size()  # loads the model; measured once per GPU, model, dtype and size
        log.info("batch size %d (auto)", batch_size)
    settings_key = generator.settings.cache_key()
    jobs = job_keys(per_image, library.enabled() if all_prompts else None)
    score = score_stage(workspace, scorer, labels=sorted({label for _, label in files}), class_map=class_map,
                        generator_model=generator.settings.model, device=generator.settings.device,
                        load=ray_engine is None)  # on Ray the scorer loads in its actors, not in this driver
    args = {"per_image": per_image, "all_prompts": all_prompts, "seed": seed, "lam": lam, "feather": feather,
            "batch_size": batch_size, "settings": settings_key, "prompts": library.to_dict(),
            "fractals": getattr(mixer.fractals, "origin", "")}
    if ray_engine is not None:  # the cluster runs the stages; this process plans and commits (no CPU share)
        args["engine"] = ray_engine.describe()
        cpu_share = contextlib.nullcontext()
        ray_stages = ray_engine.stages(mixer, generator.settings, batch_size=batch_size, score=score)
    else:
        cpu_share, ray_stages = _cpu_share(generator), contextlib.nullcontext()
    with workspace.run_lock(f"augment of {Path(train_dir).name}", on_wait=on_wait), cpu_share as share, \
            ray_stages as stages:
        workspace.manifest.set_prompt_library(library)  # records the library in use
        workspace.gc()  # files of a killed run that never got their rows
        workspace.backup("augment")
        return _run(workspace, Path(train_dir), files, mixer, generator, jobs, args, seed=seed,
                    batch_size=batch_size, progress=progress, cancel=cancel, threads=threads, share=share,
                    stages=stages, score=score)


@contextlib.contextmanager
def _cpu_share(generator) -> Iterator[CpuShare | None]:
    """A model on the CPU shares the cores with other runs on this machine (and with the pipeline's own threads)."""
    if generator.settings.resolved_device() != "cpu":
        yield None
        return
    # the same share whether the stages run in threads or one after another: on the CPU the last bits of Î depend
    # on torch's thread count, and a run must not depend on how its stages were scheduled
    with CpuShare(reserve=1) as share:
        share.apply()
        yield share


def _run(workspace: Workspace, train_dir: Path, files, mixer: Mixer, generator, jobs, args: dict, *, seed: int,
         batch_size: int, progress, cancel, threads: int | None, share: CpuShare | None,
         stages=None, score: Score | None = None) -> RunSummary:
    started = time.perf_counter()
    summary = RunSummary(run_id=0, images_total=len(files), scorer=score and score.model)
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
        if share is not None:  # re-applied before each model step, in the model's thread (torch's count is per thread)
            generate = share.bind(generate)
        compose = Compose(mixer, generator.settings)
        done = 0
        if progress is not None:
            progress(RunProgress(0, summary.augmentations_planned, 0.0))
        clock = summary.stage_cpu_seconds
        commit = _timed(clock, "commit", commit)
        if stages is None:  # the local engine; the Ray engine passes its own (bulk_ray.RayEngine.stages)
            batches = _stages(planner, files, batch_size, generate, compose, args["settings"], cancel, threads, clock,
                              score)
        else:
            batches = stages(planner, files, cancel, clock)
        for batch in batches:
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
                    "generations_reused": summary.generations_reused, "cancelled": int(summary.cancelled),
                    # what the run gave torch (cpu_share.py)
                    **({"args": json.dumps({**args, "cpu_share": share.describe()}, ensure_ascii=False)}
                       if share is not None else {})})
        finally:
            db.conn.close()
            summary.seconds = time.perf_counter() - started
    return summary


def _timed(clock: dict[str, float], name: str, fn: Callable) -> Callable:
    """`fn`, adding the CPU time of the calling thread it takes to ``clock[name]`` (any thread)."""
    lock = threading.Lock()

    def timed(*args):
        started = time.thread_time()
        try:
            return fn(*args)
        finally:
            spent = time.thread_time() - started
            with lock:
                clock[name] = clock.get(name, 0.0) + spent

    return timed


def _timed_iter(clock: dict[str, float], name: str, items: Iterator) -> Iterator:
    """The items of `items`, adding the CPU time spent producing them to ``clock[name]``."""
    while True:
        started = time.thread_time()
        try:
            item = next(items)
        except StopIteration:
            return
        finally:
            clock[name] = clock.get(name, 0.0) + time.thread_time() - started
        yield item


def _stages(planner: Planner, files, batch_size: int, generate: Generate, compose: Compose, settings_key: dict,
            cancel: threading.Event | None, threads: int | None, clock: dict[str, float],
            score: Score | None = None) -> Iterator[Batch]:
    """The batches, planned, loaded, generated, composed (and scored, with `score`): in this thread, or
    concurrently (then in order).

    The CPU time of each stage is added to `clock` (per-thread CPU time, so pool threads count in full).
    """
    cancelled = lambda: cancel is not None and cancel.is_set()  # noqa: E731
    load_source_ = _timed(clock, "load", load_source)
    compose = _timed(clock, "compose", compose)
    generate = _timed(clock, "generate", generate)
    scored = [] if score is None else [_timed(clock, "score", lambda b: b if b is None else score(b))]
    batches = _timed_iter(clock, "plan", planner.batches(files, batch_size, cancel))

    def generate_unless_cancelled(batch: Batch) -> Batch | None:
        return None if cancelled() else generate(batch)

    if threads == 1:
        for batch in batches:
            for source in batch.sources:
                load_source_(source, settings_key)
            batch = generate_unless_cancelled(batch)
            if batch is None:
                return
            for source in batch.sources:
                compose(source)
            yield scored[0](batch) if scored else batch
        return

    pool = ThreadPoolExecutor(max_workers=threads or _CPU_WORKERS, thread_name_prefix="bulk-cpu")
    try:
        def load(batch: Batch) -> Batch:
            list(pool.map(lambda s: load_source_(s, settings_key), batch.sources))
            return batch

        def compose_batch(batch: Batch | None) -> Batch | None:
            if batch is not None:
                list(pool.map(compose, batch.sources))
            return batch

        for batch in run_stages(batches, [load, generate_unless_cancelled, compose_batch, *scored],
                                names=["load", "generate", "compose", "score"][:3 + len(scored)]):
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
