"""The bulk run: augment every image of ``train/<class>/<image>`` into a workspace, as a pipeline of stages.

    plan → load → generate → compose (→ score) → commit

* **plan** (one thread; the manifest's reader; ``plan.py``): walk the files in sorted order, read and hash each
  file, ask the manifest which of its slots (``slot:0``…``slot:m-1``, or ``prompt:<p>``) are missing, draw each
  missing slot's :class:`Choice` from an rng seeded by (run seed, file sha256, slot), and look up Î already
  generated with the same cache key. A finished image is skipped without being decoded; the slots are planned as a
  stream (a huge ``per_image`` is never listed in memory) and a count whose manifest cannot fit on the disk is
  refused before anything starts.
* **load** (CPU, parallel): decode and validate the bytes (a bad file becomes a failed source with its reason),
  hash the pixels, decode cached Î.
* **generate** (the model, batched): Î for every slot that has none, each distinct prompt encoded once and each
  image VAE-encoded once (``engine/generation.py``); a degenerate output is retried, then the slot is left for the
  next run.
* **compose** (CPU, parallel): the record of each slot (mix, drift: ``engine.Mixer.compose``) and the PNG bytes
  of what the store keeps (I, Î, fractal images; A and the fitted F are derived: see ``workspace/store.py``).
* **score** (optional, ``options.scorer``; ``score_stage.py``): label consistency (CLIP) and quality flags of Î
  and A; the rows go in with the batch's.
* **commit** (the caller's thread, the only writer): journal the files, write them, insert every row of the batch
  in ONE transaction. A killed run leaves no half-written file and no duplicate; rerunning finishes the job.

The stages are plain functions over small dataclasses with no hidden global state: :func:`run_augment` runs them
concurrently in threads with bounded queues (``threads.py``: while the model generates batch k, batch k+1 is
decoded and batch k−1 is composed and committed), or one after another with ``options.threads=1`` (same results,
byte for byte); the Ray runner (``ray_runner.py``) runs the very same functions as Ray Data operators. Every
option of a run is one :class:`~.options.AugmentOptions` value.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from ..checks import format_duration
from ..engine.images import IGNORED_DIRS, IMAGE_EXTENSIONS
from ..errors import BadArgumentError
from ..workspace.labels import label_folders, read_label
from ..workspace.manifest import now, write
from .cpu_share import CpuShare
from .options import AUTO_BATCH, MIX_FIELDS, AugmentOptions, MixOptions
from .plan import Jobs, Planner, check_manifest_fits, count_missing
from .score_stage import Score, score_stage
from .stages import Batch, Commit, Compose, Generate, RunSummary, describe_change, load_source
from .threads import run_stages
from .timing import timed, timed_iter

if TYPE_CHECKING:
    from ..engine.diffusemix import Mixer
    from ..engine.fractals import FractalLibrary
    from ..engine.pix2pix import Pix2PixGenerator
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


def scan_train_dir(train_dir: str | Path, skipped: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """(relative posix path, label) of every image file under ``train_dir/<class>/``, sorted.

    The label is the class folder's name in Unicode NFC (``workspace.labels.read_label``). Hidden files and folders, ``__MACOSX`` and files
    whose extension is not an image extension are ignored; class folders are walked recursively (links to folders
    are not followed). A name with an image extension that is not a regular file (a FIFO, a socket, a device, a
    broken link) is skipped, since reading it could block forever: ``(path, reason)`` is appended to `skipped`
    and a warning is logged.
    """
    root = check_train_dir(train_dir)
    found: list[tuple[str, str]] = []
    odd: list[tuple[str, str]] = []
    stray = 0
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in IGNORED_DIRS:
            continue
        if not entry.is_dir():
            stray += entry.is_file()
            continue
        for file in _files_under(entry.path):
            rel = Path(file.path).relative_to(root).as_posix()
            if file.is_file():
                found.append((rel, read_label(entry.name)))  # café in NFC and NFD is one class
            else:
                odd.append((rel, f"not a regular file ({_kind(file)}): skipped"))
    if stray:
        log.warning("ignored %d file(s) directly in %s: images must be in class folders", stray, root)
    if odd:
        log.warning("skipped %d entr%s that are not regular files, such as '%s' (%s)", len(odd),
                    "y" if len(odd) == 1 else "ies", *odd[0])
        if skipped is not None:
            skipped.extend(sorted(odd))
    found.sort()
    return found


def _files_under(folder: str) -> Iterator[os.DirEntry]:
    """Every entry with an image extension under `folder` that is not a folder (hidden ones left out)."""
    with os.scandir(folder) as entries:
        listed = sorted(entries, key=lambda e: e.name)
    for entry in listed:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in IGNORED_DIRS:
                yield from _files_under(entry.path)
        elif entry.is_symlink() and entry.is_dir():
            continue  # a link to a folder is not walked
        elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
            yield entry


def _kind(entry: os.DirEntry) -> str:
    """What a non-regular entry is, in words."""
    try:
        mode = os.stat(entry.path).st_mode
    except OSError:
        return "a broken link"
    for test, words in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                        (stat.S_ISBLK, "a device")):
        if test(mode):
            return words
    return "not a file"


@dataclass
class RunProgress:
    """Where a run is, in augmentations (a slot of a failed image counts as done: nothing is left to do for it).

    ``seconds``: the time the work has taken so far, the model's loading left out, so that the rate and the time
    left refine the estimate given before the run (``estimate.py``) from the measured throughput."""

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
        left = "" if eta is None else f", {format_duration(eta)} left"
        return f"{self.done}/{self.total} augmentations, {self.rate:.2f}/s{left}"




# ------------------------------------------------------------------------------------------------ the run
def run_augment(
    workspace: Workspace,
    train_dir: str | Path,
    options: AugmentOptions | None = None,
    *,
    prompts: PromptLibrary | None = None,
    fractals: FractalLibrary | None = None,
    generator: Pix2PixGenerator | None = None,
    generator_factory: Callable[[], Pix2PixGenerator] | None = None,
    progress: Callable[[RunProgress], None] | None = None,
    cancel: threading.Event | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> RunSummary:
    """Augment every image of ``train_dir/<class>/`` into `workspace` as `options` say, resuming what exists.

    `options` (:class:`~.options.AugmentOptions`; default: its defaults) holds every setting of the run: the
    generation settings, the mix options, how many augmentations per image, the seed, the batch size, the scorer
    and where the stages run. `prompts` (default: the workspace's library) and `fractals` (default: the shipped
    set) are the libraries drawn from; `generator` (tests, the app) is a generator already built, whose settings
    then replace ``options.settings``.

    ``progress(RunProgress)`` is called after every committed batch; ``cancel.is_set()`` stops cleanly: no new
    batch is started, what the model has made is committed. Bad images are recorded as failed sources and the run
    goes on; entries that are not regular files are skipped (``RunSummary.ignored``). ``options.threads=1`` runs the
    stages one after another in this thread (same results byte for byte); otherwise they run concurrently. The
    workspace is locked for the run (a second run waits, ``on_wait`` is told who holds it) and its manifest is
    backed up first. Raises BadArgumentError for bad arguments, and before anything starts for a count of
    augmentations whose manifest could not fit on the workspace's disk.

    ``options.runner="ray"`` runs the same stages on a Ray cluster (``ray_runner.py``, docs/cluster.md); each worker
    builds its generator from ``options.settings`` (``generator_factory``, a test and benchmark hook, builds it
    instead; `generator` must then be None).

    ``options.scorer`` (``auto``, a CLIP model id or folder, or a ``score_stage.Score``; None or ``none``: no scores)
    adds the scores stage after compose: label consistency and quality flags of every Î and A
    (``score_stage.score_stage``; ``options.class_map``: a class-name mapping file, remembered in the workspace).
    """
    from ..engine.pix2pix import Pix2PixGenerator

    options = AugmentOptions() if options is None else options
    if not isinstance(options, AugmentOptions):
        raise BadArgumentError(f"options must be an AugmentOptions, got {type(options).__name__}.")
    ignored: list[tuple[str, str]] = []
    files = scan_train_dir(train_dir, ignored)
    if not files:
        raise BadArgumentError(
            f"no image files found in '{train_dir}'; the layout is DIR/<class>/<image> with extensions such as "
            ".png/.jpg."
        )
    library = prompts if prompts is not None else workspace.manifest.get_prompt_library()
    library.validate()
    mixer = options.mix.mixer(library, fractals, seed=options.seed)
    jobs = Jobs(options.per_image, tuple(library.enabled()) if options.all_prompts else None)
    check_manifest_fits(workspace.manifest, count_missing(workspace.manifest, files, jobs), workspace.path)
    ray = None
    if options.runner == "ray":
        from .ray_runner import RayRunner

        if generator is not None:
            raise BadArgumentError("the Ray runner builds one generator per worker: pass options.settings, not "
                                   "generator=.")
        ray = RayRunner(options, generator_factory=generator_factory)
        generator = generator_factory() if generator_factory is not None else None  # its settings; never loaded here
    if generator is None:
        generator = Pix2PixGenerator(options.settings)
    batch_size = options.batch_size
    if batch_size == AUTO_BATCH:
        batch_size = generator.auto_batch_size()  # loads the model; measured once per GPU, model, dtype and size
        log.info("batch size %d (auto)", batch_size)
    options = options.resolved(generator.settings, batch_size)
    score = score_stage(workspace, options.scorer, labels=sorted({label for _, label in files}),
                        class_map=options.class_map, generator_model=options.settings.model,
                        device=options.settings.device, load=ray is None)  # on Ray it loads in the workers
    args = {**options.record(), "prompts": library.to_dict(), "fractals": getattr(mixer.fractals, "origin", "")}
    if ray is not None:  # the cluster runs the stages; this process plans and commits (no CPU share)
        args["engine"] = ray.describe()  # the key earlier runs recorded (the --engine flag's name)
        cpu_share, ray_stages = contextlib.nullcontext(), ray.stages(mixer, options, score=score)
    else:
        cpu_share, ray_stages = _cpu_share(generator), contextlib.nullcontext()
    with workspace.run_lock(f"augment of {Path(train_dir).name}", on_wait=on_wait), cpu_share as share, \
            ray_stages as stages:
        workspace.manifest.set_prompt_library(library)  # records the library in use
        workspace.gc()  # files of a killed run that never got their rows
        workspace.backup("augment")
        return _run(workspace, Path(train_dir), files, jobs, options, args, mixer, generator, ignored=ignored,
                    progress=progress, cancel=cancel, share=share, stages=stages, score=score)


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


def _run(workspace: Workspace, train_dir: Path, files, jobs: Jobs, options: AugmentOptions, args: dict,
         mixer: Mixer, generator, *, ignored, progress, cancel, share: CpuShare | None, stages=None,
         score: Score | None = None) -> RunSummary:
    started = time.perf_counter()
    summary = RunSummary(run_id=0, images_total=len(files), scorer=score and score.model, ignored=list(ignored),
                         label_notes=label_folders({rel.split("/", 1)[0] for rel, _ in files}).notes())
    planner = Planner(workspace.manifest, workspace.store, train_dir, mixer, jobs, seed=options.seed,
                      settings_key=args["settings"])
    summary.augmentations_planned = count_missing(workspace.manifest, files, jobs)
    db = workspace.manifest.connect()  # the writer's connection for the whole run
    try:
        with write(db):
            summary.run_id = db["runs"].insert(
                {"started_at": now(), "train_dir": str(train_dir.resolve()), "args": json.dumps(args, ensure_ascii=False),
                 "images_total": len(files)}).last_pk
        changes = _settings_changed(db, summary.run_id, args)
        summary.settings_changed = [name for name, _, _ in changes]
        summary.settings_details = [describe_change(*change) for change in changes]
        commit = Commit(workspace, db, run_id=summary.run_id, summary=summary)
        generate = Generate(generator, batch_size=options.batch_size)
        if share is not None:  # re-applied before each model step, in the model's thread (torch's count is per thread)
            generate = share.bind(generate)
        compose = Compose(mixer, generator.settings)
        done = 0
        if progress is not None:
            progress(RunProgress(0, summary.augmentations_planned, 0.0))
        clock = summary.stage_cpu_seconds
        commit = timed(clock, "commit", commit)
        if stages is None:  # the local runner; the Ray runner passes its own (ray_runner.RayRunner.stages)
            batches = _stages(planner, files, options.batch_size, generate, compose, args["settings"], cancel,
                              options.threads, clock, score)
        else:
            batches = stages(planner, files, cancel, clock)
        with contextlib.closing(batches):  # stops the stages here, in this thread, whatever happens
            for batch in batches:
                done += commit(batch)
                if progress is not None:  # the rate (and the time left) of the work: loading the model left out
                    total = max(summary.augmentations_planned, done)
                    progress(RunProgress(done, total, time.perf_counter() - started - summary.load_seconds))
        # a cancel that came when every augmentation was made (right as the run finished) cancelled nothing
        summary.cancelled = bool(cancel is not None and cancel.is_set()) and _work_left(workspace, files, jobs)
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


def _stages(planner: Planner, files, batch_size: int, generate: Generate, compose: Compose, settings_key: dict,
            cancel: threading.Event | None, threads: int | None, clock: dict[str, float],
            score: Score | None = None) -> Iterator[Batch]:
    """The batches, planned, loaded, generated, composed (and scored, with `score`): in this thread, or
    concurrently (then in order).

    The CPU time of each stage is added to `clock` (per-thread CPU time, so pool threads count in full).
    """
    cancelled = lambda: cancel is not None and cancel.is_set()  # noqa: E731
    load_source_ = timed(clock, "load", load_source)
    compose = timed(clock, "compose", compose)
    generate = timed(clock, "generate", generate)
    scored = [] if score is None else [timed(clock, "score", lambda b: b if b is None else score(b))]
    batches = timed_iter(clock, "plan", planner.batches(files, batch_size, cancel))

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


def _work_left(workspace: Workspace, files, jobs: Jobs) -> bool:
    """Whether any readable file still lacks augmentations (files that failed are not work left)."""
    with workspace.manifest.session() as db:
        failed = {row[0] for row in db.execute("SELECT path FROM sources WHERE status = 'failed'")}
    return count_missing(workspace.manifest, [f for f in files if f[0] not in failed], jobs) > 0


def _settings_changed(db, run_id: int, args: dict) -> list[tuple[str, object, object]]:
    """Existing slots are never redone: say so when a run's settings differ from the previous run's (a mix option
    an older run did not record counts as its default). Gives (name, before, now) per setting that differs; the
    generation settings are compared one by one ('settings.steps'), a prompt library as a whole ('prompts')."""
    previous = db.execute("SELECT args FROM runs WHERE id < ? ORDER BY id DESC LIMIT 1", [run_id]).fetchone()
    if previous is None:
        return []
    old = {**MixOptions().record(), **json.loads(previous[0] or "{}")}
    changed: list[tuple[str, object, object]] = []
    for k in sorted(("seed", "settings", "prompts", "fractals", "all_prompts", *MIX_FIELDS)):
        before, after = old.get(k), args.get(k)
        if before == after:
            continue
        if k == "settings" and isinstance(before, dict) and isinstance(after, dict):
            changed += [(f"settings.{sub}", before.get(sub), after.get(sub)) for sub in sorted({*before, *after})
                        if before.get(sub) != after.get(sub)]
        else:
            changed.append((k, before, after))
    if changed:
        log.warning(
            "this run's settings differ from the previous run's (%s): augmentations already in the workspace are kept "
            "as they are and only missing slots use the new values (use a new workspace to redo everything)",
            "; ".join(describe_change(*c) for c in changed),
        )
    return changed
