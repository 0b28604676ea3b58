"""The Ray run's cluster side: the Ray Data pipeline (read -> load -> generate -> compose, one row per planned batch)
and the stage functions its tasks and actors run (the local engine's own stages, ``stages.py``, around pickled
batches), with the project's errors carried back to the driver.

* **read** is a one-task streaming datasource on the driver's node that takes the batches out of the driver's queue
  as they come; the rest of the pipeline runs as long as the run does, so the actor pool is started once.
* **load** (:func:`stages.load_source`) and **compose** (:class:`stages.Compose`, with the fractal library shipped
  once with the job) are CPU tasks of ``plan.stage_cpus`` CPUs each; **generate** (:class:`stages.Generate`) runs in
  ``plan.workers`` actors, each building its own generator from picklable settings and loading the model once, on its
  first batch that needs it (``ray_plan.py`` decides the CPUs and GPUs).
* Only what the commit needs travels back: the rows' values and the PNG bytes of the files to store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from .options import MixOptions
from .ray_plan import ResourcePlan
from .stages import Batch, Compose, Generate, load_source
from ..errors import BadArgumentError, DiffuseMixError

try:  # optional: the module imports without ray (ray_runner explains a missing ray in one sentence)
    from ray.data import Datasource
except ImportError:  # pragma: no cover - exercised by the "ray missing" test in a subprocess
    Datasource = object

if TYPE_CHECKING:
    import pyarrow

    from ..engine.diffusemix import Mixer
    from ..engine.generation import GenerationSettings

__all__ = ["END", "MixerSpec", "PICKLE_PROTOCOL", "build_dataset", "pipeline_report", "stop_pipeline", "user_error"]

END = None  # the feed queue's end-of-run marker
PICKLE_PROTOCOL = 4  # numpy arrays come back writable (protocol 5 in-band gives read-only ones)


# ------------------------------------------------------------------------------------------------ the pipeline
def build_dataset(ray_module, feed_queue, plan: ResourcePlan, *, settings: GenerationSettings, batch_size: int,
                  spec: MixerSpec, score_settings: dict | None, generator_factory: Callable[[], Any] | None):
    """read → load → generate → compose (→ score), one row per planned batch (``{"index", "batch"}``)."""
    ray_data = ray_module.data
    dataset = ray_data.read_datasource(_PlannedBatches(feed_queue), override_num_blocks=1, num_cpus=0)
    # max_calls=0 is the default (a worker takes any number of tasks), stated so that the load tasks' remote
    # arguments differ from the actors': Ray Data never fuses load into the generate actors then, where
    # decoding would queue behind the model
    dataset = dataset.map_batches(_load_table, fn_kwargs={"settings_key": settings.cache_key()}, batch_size=1,
                                  batch_format="pyarrow", num_cpus=plan.stage_cpus, max_calls=0)
    dataset = dataset.map_batches(
        _GenerateActor, batch_size=1, batch_format="pyarrow",
        fn_constructor_kwargs={"settings": settings, "batch_size": batch_size, "generator_factory": generator_factory},
        compute=ray_data.ActorPoolStrategy(size=plan.workers),
        num_cpus=plan.cpus_per_worker, num_gpus=plan.gpus_per_worker or None)
    dataset = dataset.map_batches(_compose_table, fn_kwargs={"spec": spec, "settings": settings,
                                                             "score_settings": score_settings},
                                  batch_size=1, batch_format="pyarrow", num_cpus=plan.stage_cpus)
    context = dataset.context
    context.target_max_block_size = 1  # one row (one planned batch) per block: hand each on as soon as made
    context.enable_progress_bars = False  # the caller reports progress (RunProgress after every commit)
    context.print_on_execution_start = False
    context.raise_original_map_exception = True  # a worker's _WorkerError, not Ray Data's wrapper of it
    # The driver's in-flight limit bounds the work and memory of every stage, and it closes a loop that Ray
    # Data's own throttles do not expect: the source feeds a batch only when one is committed. Two of them
    # deadlock in that loop (seen here on 2 and 8 CPUs): the per-operator CPU reservation (upstream operators
    # first, expecting them to finish and hand theirs on: compose waited forever behind an idle load) and the
    # downstream-capacity backpressure (compose held back while the driver waited for its next batch in
    # order). Both off; the in-flight limit is the backpressure, and the plan keeps CPUs for load and compose.
    context.op_resource_reservation_enabled = False
    context.downstream_capacity_backpressure_ratio = None
    return dataset


def pipeline_report(dataset) -> str:
    """Ray Data's view of a running pipeline: the blocks queued at each operator and its tasks running ("" when not
    running). Read from the executor's state, internal to Ray Data: best effort, for the stall watchdog's error."""
    try:
        parts = []
        for op, state in _executor(dataset)._topology.items():
            held = [what for what, flag in (("task submission", "_in_task_submission_backpressure"),
                                            ("task output", "_in_task_output_backpressure")) if getattr(op, flag, 0)]
            parts.append(f"{op.name} {state.total_enqueued_input_blocks()} queued {op.num_active_tasks()} running"
                         + (f" ({' and '.join(held)} held back)" if held else ""))
    except Exception:  # noqa: BLE001 - not started, ended, or another Ray Data
        return ""
    return "Ray Data: " + ", ".join(parts[1:])  # less the first operator, the driver's input


def stop_pipeline(dataset) -> None:
    """End the pipeline's execution now: its actors are killed and its tasks cancelled (Ray Data's own shutdown, as
    when a dataset is garbage-collected). Without this, a run stopped while the pipeline waits would leave it holding
    the cluster, and ending it by killing its source makes Ray Data log each task's failure as an internal error."""
    executor = _executor(dataset)
    if executor is not None:
        executor.shutdown(force=True)


def _executor(dataset):
    """The streaming executor running `dataset` (Ray Data keeps it on the dataset only once the first row is out)."""
    executor = getattr(dataset, "_current_executor", None)
    if executor is None:
        from ray.data._internal.execution.streaming_executor import StreamingExecutor

        running = dataset.get_dataset_id()
        executor = next((thread for thread in threading.enumerate() if isinstance(thread, StreamingExecutor)
                         and getattr(thread, "_dataset_id", None) == running), None)
    return executor


class _PlannedBatches(Datasource):
    """The planned batches as the driver feeds them: one read task that takes them out of a Ray queue until the end
    marker, on the driver's node. One block per batch, yielded as soon as it is taken."""

    def __init__(self, feed_queue) -> None:
        super().__init__()
        self.feed_queue = feed_queue

    def get_name(self) -> str:
        return "PlannedBatches"

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    @property
    def supports_distributed_reads(self) -> bool:
        return False  # the read task runs on the driver's node, next to the queue

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list:
        from ray.data import ReadTask
        from ray.data.block import BlockMetadata

        metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        feed_queue = self.feed_queue
        return [ReadTask(lambda: _take_batches(feed_queue), metadata)]


def _take_batches(feed_queue) -> Iterator[pyarrow.Table]:
    while True:
        item = feed_queue.get(block=True)
        if item is END:
            return
        index, payload = item
        yield _table([index], [payload])


def _table(indexes: list[int], payloads: list[bytes]) -> pyarrow.Table:
    import pyarrow as pa

    return pa.table({"index": pa.array(indexes, pa.int64()), "batch": pa.array(payloads, pa.large_binary())})


def _map_table(table: pyarrow.Table, stage: Callable[[Batch], Batch]) -> pyarrow.Table:
    """Apply `stage` to each pickled batch of a block; the project's errors travel back as :class:`_WorkerError`."""
    try:
        payloads = [pickle.dumps(stage(pickle.loads(payload)), protocol=PICKLE_PROTOCOL)
                    for payload in table.column("batch").to_pylist()]
    except DiffuseMixError as exc:
        raise _WorkerError(type(exc).__name__, str(exc)) from None
    return _table(table.column("index").to_pylist(), payloads)


# ------------------------------------------------------------------------------------------------ 2. load
def _load_table(table: pyarrow.Table, settings_key: dict) -> pyarrow.Table:
    def load(batch: Batch) -> Batch:
        for source in batch.sources:
            load_source(source, settings_key)
            for slot in source.slots:
                slot.generated_png = None  # decoded into slot.generated; the bytes need not travel on
        return batch

    return _map_table(table, load)


# ------------------------------------------------------------------------------------------------ 3. generate
class _GenerateActor:
    """One generate actor: its own generator, built here from picklable settings (or by the test/bench factory).

    The model loads once per actor, on the first batch that needs it (:class:`Generate`), and serves every later
    batch of the run: the pipeline is not reloaded between batches.
    """

    def __init__(self, settings: GenerationSettings, batch_size: int,
                 generator_factory: Callable[[], Any] | None = None) -> None:
        if generator_factory is not None:
            generator = generator_factory()
        else:
            from ..engine.pix2pix import Pix2PixGenerator

            generator = Pix2PixGenerator(settings)
        self.generate = Generate(generator, batch_size=batch_size)

    def __call__(self, table: pyarrow.Table) -> pyarrow.Table:
        return _map_table(table, self.generate)


# ------------------------------------------------------------------------------------------------ 4. compose
# The run's mix settings, as the workers receive them (the one place where they cross to the cluster).
@dataclass(frozen=True)
class MixerSpec:
    """What a worker needs to rebuild the driver's :class:`Mixer` for composing: the prompt library, the run's mix
    options, and every fractal of the library as image file bytes (workers need no access to the driver's disk).
    """

    prompts: Any
    mix: MixOptions
    fractal_origin: str
    fractals: tuple[tuple[str, bytes], ...]  # (id, file bytes), in the library's order
    digest: str

    @classmethod
    def of(cls, mixer: Mixer, mix: MixOptions) -> MixerSpec:
        from ..engine.images import encode_png

        library = mixer.fractals
        folder = Path(library.origin) if library.origin else None
        fractals = []
        for fractal_id in library.ids:
            file = folder / fractal_id if folder is not None else None
            if file is not None and file.is_file():  # a folder library: its files as they are
                data = file.read_bytes()
            else:  # an in-memory library: its pixels as PNG
                data = encode_png(library.get(fractal_id))
            fractals.append((fractal_id, data))
        digest = hashlib.sha256(pickle.dumps((mixer.prompts, mix, library.origin, fractals), protocol=4)).hexdigest()
        return cls(prompts=mixer.prompts, mix=mix, fractal_origin=library.origin, fractals=tuple(fractals),
                   digest=digest)

    def mixer(self) -> Mixer:
        """The mixer, with the fractals as files in this machine's temp folder (decoded on use, as from a folder)."""
        from ..engine.fractals import FractalLibrary

        folder = _unpacked_fractals(self)
        library = FractalLibrary({fractal_id: folder / fractal_id for fractal_id, _ in self.fractals},
                                 origin=self.fractal_origin)
        return self.mix.mixer(self.prompts, library)


def _unpacked_fractals(spec: MixerSpec) -> Path:
    """``$TMPDIR/diffusemix-fractals-<digest>``: the spec's fractal files, written once per machine (atomically)."""
    target = Path(tempfile.gettempdir()) / f"diffusemix-fractals-{spec.digest[:24]}"
    if target.is_dir():
        return target
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    for fractal_id, data in spec.fractals:
        relative = PurePosixPath(fractal_id)
        if relative.is_absolute() or ".." in relative.parts:
            raise BadArgumentError(f"fractal id {fractal_id!r} is not a relative path inside the library.")
        file = staging.joinpath(*relative.parts)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
    try:
        os.rename(staging, target)
    except OSError:  # another worker on this machine was first
        shutil.rmtree(staging, ignore_errors=True)
    return target


_WORKER_COMPOSE: dict[tuple[str, Any], Compose] = {}  # per worker process: one Compose per run's spec and settings
_WORKER_SCORE: dict[str, Any] = {}  # per worker process: the run's scores stage


def _compose_table(table: pyarrow.Table, spec: MixerSpec, settings: GenerationSettings,
                   score_settings: dict | None = None) -> pyarrow.Table:
    key = (spec.digest, settings)
    compose = _WORKER_COMPOSE.get(key)
    if compose is None:
        _WORKER_COMPOSE.clear()  # a worker serves one run at a time
        compose = _WORKER_COMPOSE[key] = Compose(spec.mixer(), settings)

    score = None if score_settings is None else _worker_score(score_settings)

    def compose_batch(batch: Batch) -> Batch:
        for source in batch.sources:
            compose(source)
        if score is not None:
            batch = score(batch)  # needs Î and A: before _for_commit drops them
        return _for_commit(batch)

    return _map_table(table, compose_batch)


def _worker_score(settings: dict):
    """The scores stage of this worker process, built once (the scorer model loads on its first batch)."""
    key = json.dumps(settings, sort_keys=True, default=str)
    score = _WORKER_SCORE.get(key)
    if score is None:
        from .score_stage import Score

        _WORKER_SCORE.clear()  # a worker serves one run at a time
        kwargs = dict(settings)
        score = _WORKER_SCORE[key] = Score(kwargs.pop("model"), **kwargs)
    return score


def _for_commit(batch: Batch) -> Batch:
    """Drop the arrays the commit does not read before the batch travels back to the driver.

    What the store keeps travels as PNG bytes in ``Source.files``; the records keep their values (choices, drift,
    settings) without their six images; a source's image becomes an empty (h, w, 0) array, whose shape is all the
    commit reads.
    """
    for source in batch.sources:
        if source.image is not None:
            source.image = np.empty((*source.image.shape[:2], 0), np.uint8)
        for slot in source.slots:
            slot.generated = slot.generated_png = None
            if slot.record is not None:
                slot.record = dataclasses.replace(slot.record, original=None, generated=None, mask=None,
                                                  hybrid=None, fractal=None, final=None)
    return batch


# ------------------------------------------------------------------------------------------------ errors
class _WorkerError(Exception):
    """A project error raised on a worker, as (class name, message): it unpickles on the driver whatever the
    class's constructor takes, and becomes that class again there (:func:`user_error`)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)
        self.kind, self.message = kind, message


def user_error(exc: BaseException) -> BaseException:
    """The project's error that a worker raised, found inside Ray's errors, as its own class; else `exc`."""
    from .. import errors

    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, _WorkerError):
            kind = getattr(errors, current.kind, None)
            if not (isinstance(kind, type) and issubclass(kind, DiffuseMixError)):
                kind = DiffuseMixError
            error = kind.__new__(kind)
            Exception.__init__(error, current.message)  # the message as it was, whatever the class's arguments
            return error
        if isinstance(current, DiffuseMixError):
            return current
        pending.extend([getattr(current, "cause", None), current.__cause__, current.__context__])
    return exc
