"""The bulk run on a Ray cluster: the same stages as ``bulk.py``, run as Ray Data operators.

    driver                          Ray Data (one streaming execution for the whole run)              driver
    plan ──► bounded queue ──► read ──► load (CPU tasks) ──► generate (actor pool) ──► compose (CPU tasks) ──► commit

* **plan** stays on the driver: :class:`bulk_stages.Planner` reads and hashes every file, asks the manifest which
  slots are missing and draws their choices. Each planned :class:`Batch` (with the file's bytes and any cached Î's
  bytes: no shared file system is needed) is pickled into a Ray queue actor. At most ``max_in_flight`` batches are
  planned but not yet committed at any time, so memory stays bounded whatever the dataset's size.
* **read** is a one-task streaming datasource on the driver's node that takes the batches out of that queue as they
  come; the rest of the pipeline runs as long as the run does, so the actor pool is started once.
* **load** (:func:`bulk_stages.load_source`), **generate** (:class:`bulk_stages.Generate` inside an actor that
  builds its own generator from picklable settings and loads the model once, on its first batch that needs it) and
  **compose** (:class:`bulk_stages.Compose`, with the fractal library shipped once with the job) are the local
  engine's stage functions, unchanged. One Ray row is one planned batch, so the model sees the very batches the local
  engine gives it, and the results are the same, byte for byte.
* **commit** stays on the driver, the only writer of the manifest: results come back by ``iter_rows`` as they are
  made, are put back in plan order and committed one transaction per batch with :class:`bulk_stages.Commit`. Only
  what the commit needs travels back: the rows' values and the PNG bytes of the files to store.

Faults: Ray Data restarts a dead actor and retries its batches (actor pools default to ``max_restarts=-1`` and
``max_task_retries=-1``; CPU tasks are retried when their worker dies). A killed driver loses nothing committed: run
the same command again (``Workspace.gc`` removes the files its journal names). Cancel: no batch is planned after
``cancel`` is set; the batches already handed to the workers (at most ``max_in_flight``) are finished and committed.

``ray`` is an optional dependency (``requirements-ray.txt``); nothing else in the package imports this module.

Longer than the house's ~450 lines: connecting, feeding, the Ray Data pipeline, the worker-side stages and error
transport are one story that only makes sense read together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import queue
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from .options import AugmentOptions, MixOptions
from .plan import Planner
from .stages import Batch, Compose, Generate, load_source
from .timing import timed_iter
from ..checks import check_int
from ..errors import BadArgumentError, DiffuseMixError

try:  # optional: the module imports without ray, so that a missing ray can be explained in one sentence
    import ray
    from ray.data import Datasource
except ImportError:  # pragma: no cover - exercised by the "ray missing" test in a subprocess
    ray = None
    Datasource = object

if TYPE_CHECKING:
    import pyarrow

    from ..engine.diffusemix import Mixer
    from ..engine.generation import GenerationSettings

__all__ = ["INSTALL_HINT", "RayRunner", "RayUnavailableError", "require_ray"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -r requirements-ray.txt"
FORWARDED_ENV = ("DIFFUSEMIX_ALLOW_DOWNLOAD", "HF_HUB_OFFLINE")  # set on the workers as on the driver
IN_FLIGHT_PER_WORKER = 4  # planned-but-uncommitted batches per actor: two queued at the actor, one each side
_END = None  # the queue's end-of-run marker
_PICKLE_PROTOCOL = 4  # numpy arrays come back writable (protocol 5 in-band gives read-only ones)


class RayUnavailableError(DiffuseMixError):
    """Ray cannot be used: not installed, or the cluster cannot be reached."""


def require_ray():
    """The ``ray`` module, or RayUnavailableError saying how to install it."""
    if ray is None:
        raise RayUnavailableError(
            f"--engine ray needs Ray, which is not installed: install it with `{INSTALL_HINT}` (or use the default "
            "--engine local)."
        )
    return ray


# ------------------------------------------------------------------------------------------------ the engine
class RayRunner:
    """Where and how a bulk run executes on Ray: the cluster's address and the generate actors' resources, from the
    run's options (``options.AugmentOptions``: ``ray_address``, ``workers``, ``gpus_per_worker``, ``cpus_per_worker``).

    ``address`` is passed to ``ray.init`` when this process is not connected yet: None (a ``RAY_ADDRESS``, a cluster
    started with ``ray start`` on this machine, or else a new local instance), ``"auto"`` or ``"HOST:PORT"``; this
    process must run on a node of the cluster (Ray Data cannot stream through a Ray Client ``ray://`` connection).
    ``workers`` generate actors (default: as many as the cluster's GPUs allow, else 1), each holding
    ``gpus_per_worker`` GPUs (default 1 when the cluster has GPUs, else 0) and ``cpus_per_worker`` CPUs.
    ``generator_factory`` (tests and benchmarks) builds each actor's generator instead of ``Pix2PixGenerator``; it
    is pickled to the workers.
    """

    def __init__(self, options: AugmentOptions, *, generator_factory: Callable[[], Any] | None = None,
                 max_in_flight: int | None = None) -> None:
        address, workers = options.ray_address, options.workers
        gpus_per_worker, cpus_per_worker = options.gpus_per_worker, options.cpus_per_worker
        if workers is not None:
            workers = check_int("workers", workers, minimum=1)
        gpus_per_worker = _check_resource("gpus_per_worker", gpus_per_worker, allow_zero=True)
        cpus_per_worker = _check_resource("cpus_per_worker", cpus_per_worker, allow_zero=False)
        if max_in_flight is not None:
            max_in_flight = check_int("max_in_flight", max_in_flight, minimum=1)
        self.ray = require_ray()
        self.address = address
        _refuse_ray_client(self.ray, address)
        _connect(self.ray, address)
        resources = self.ray.cluster_resources()
        cluster_gpus = float(resources.get("GPU", 0))
        self.gpus_per_worker = gpus_per_worker if gpus_per_worker is not None else (1.0 if cluster_gpus else 0.0)
        self.cpus_per_worker = cpus_per_worker if cpus_per_worker is not None else 1.0
        if workers is None:
            workers = max(1, int(cluster_gpus // self.gpus_per_worker)) if self.gpus_per_worker else 1
        self.workers = workers
        self.generator_factory = generator_factory
        self.max_in_flight = max_in_flight or IN_FLIGHT_PER_WORKER * workers + 2
        wanted_gpus = self.workers * self.gpus_per_worker
        if wanted_gpus > cluster_gpus:
            log.warning("the Ray cluster has %g GPU(s) now and %d worker(s) x %g GPU(s) were asked for: the workers "
                        "that do not fit wait until the cluster grows", cluster_gpus, self.workers,
                        self.gpus_per_worker)

    def describe(self) -> dict:
        """The engine's settings, for the run's record in the manifest."""
        return {"name": "ray", "address": self.address, "workers": self.workers,
                "gpus_per_worker": self.gpus_per_worker, "cpus_per_worker": self.cpus_per_worker}

    @contextlib.contextmanager
    def stages(self, mixer: Mixer, options: AugmentOptions, *, score=None) -> Iterator[Callable[..., Iterator[Batch]]]:
        """A function ``(planner, files, cancel, clock) -> batches`` like ``runner._stages``; all stops on exit.

        `options` are the run's, resolved (its generator's settings, a whole batch size); `score` (a
        ``score_stage.Score``) adds the scores stage after compose, on the cluster's CPUs.
        """
        run = _RayRun(self, mixer, options, score=score)
        try:
            yield run.batches
        finally:
            run.close()


def _check_resource(name: str, value: float | None, *, allow_zero: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0 \
            or (value == 0 and not allow_zero):
        least = ">= 0" if allow_zero else "> 0"
        raise BadArgumentError(f"{name} must be a number {least} (a fraction shares a device), got {value!r}.")
    return float(value)


def _refuse_ray_client(ray_module, address: str | None) -> None:
    """Ray Data 2.60's streaming executor needs a driver on a node of the cluster; through Ray Client it fails
    inside Ray (``'Worker' object has no attribute 'core_worker'``, seen here). Say so before anything starts."""
    client = str(address or os.environ.get("RAY_ADDRESS", "")).startswith("ray://")
    if not client and ray_module.is_initialized():
        with contextlib.suppress(ImportError):  # Ray Client needs ray[client]; without it, no client connection
            from ray.util.client import ray as client_ray

            client = client_ray.is_connected()
    if client:
        raise RayUnavailableError(
            "the Ray engine cannot run through a Ray Client connection (ray://...), which Ray Data does not stream "
            "through: run the command on a node of the cluster with --address auto (or HOST:6379), or submit it with "
            "`ray job submit` (see docs/cluster.md)."
        )


def _connect(ray_module, address: str | None) -> None:
    """Connect this process to Ray unless it is already (then the existing connection is used as it is)."""
    if ray_module.is_initialized():
        return
    _check_reachable(address)
    # The engine's own code travels with the job (the cluster needs only the requirements installed), and so does
    # this process's model download policy (model_loading.py): workers load the model as this process would.
    runtime_env: dict[str, Any] = {"py_modules": [str(Path(__file__).resolve().parents[1])]}
    env_vars = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    if env_vars:
        runtime_env["env_vars"] = env_vars
    try:
        ray_module.init(address=address, runtime_env=runtime_env)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at '{address}'" if address else "a Ray cluster"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayUnavailableError(
            f"cannot connect to {where} ({reason}); start one with `ray start --head` (see docs/cluster.md) or "
            "pass --address auto or HOST:PORT from a node of the cluster."
        ) from exc


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A HOST:PORT that nothing answers on fails here in seconds (``ray.init`` would retry for minutes)."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit():
        return  # None, "auto", or a form ray.init explains itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayUnavailableError(
            f"cannot reach the Ray cluster at '{address}' ({exc.strerror or exc}); check the address (`ray status` on "
            "the head node shows it) or start the cluster with `ray start --head` (see docs/cluster.md)."
        ) from None


# ------------------------------------------------------------------------------------------------ one run
class _RayRun:
    """One bulk run's Ray side: the feed queue, the dataset, and the threads that feed it and drain it."""

    def __init__(self, engine: RayRunner, mixer: Mixer, options: AugmentOptions, *, score=None) -> None:
        self.engine, self.mixer, self.options = engine, mixer, options
        self.settings, self.batch_size = options.settings, options.batch_size
        # the scorer runs in the compose tasks, on the CPU: the GPUs belong to the generate workers, CLIP-B/32
        # costs under 0.1% of a generation's FLOPs (bench/score.py), and a separate actor pool would hold CPUs the
        # load and compose tasks need (it deadlocked a 2-CPU cluster)
        self.score_settings = None if score is None else {**score.settings(), "device": "cpu", "dtype": "float32"}
        self.settings_key = self.settings.cache_key()
        self._results: queue.Queue = queue.Queue()  # ("batch", Batch) | ("fed", n) | ("done", None) | ("error", e)
        self._slots = threading.BoundedSemaphore(engine.max_in_flight)
        self._stop = threading.Event()
        self._feed_queue = None  # the Ray queue actor, made when the first batch needs the workers
        self._threads: list[threading.Thread] = []

    # the driver's side ------------------------------------------------------------------------------------
    def batches(self, planner: Planner, files, cancel: threading.Event | None,
                clock: dict[str, float] | None = None) -> Iterator[Batch]:
        """Every planned batch, processed by the cluster, in plan order (at most ``max_in_flight`` at a time).

        The planner's CPU time is added to ``clock["plan"]``; the other stages' CPU time is spent on the cluster.
        """
        self._start_thread(self._feed, planner, files, cancel, {} if clock is None else clock, name="ray-feed")
        waiting: dict[int, Batch] = {}
        next_index, total, drained = 0, None, False
        while total is None or next_index < total:
            try:
                kind, value = self._results.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "error":
                raise _user_error(value)
            if kind == "batch":
                waiting[value.index] = value
            elif kind == "fed":
                total = value
            elif kind == "done":
                drained = True
            while next_index in waiting:
                batch = waiting.pop(next_index)
                next_index += 1
                yield batch  # committed by the caller before this generator resumes
                self._slots.release()
            if drained and total is not None and next_index < total:  # everything that will come has come
                raise DiffuseMixError(
                    f"{total - next_index} batch(es) of this run did not come back from the Ray cluster (a worker "
                    "of the pipeline died); rerun the same command to finish them."
                )

    def _feed(self, planner: Planner, files, cancel: threading.Event | None, clock: dict[str, float]) -> None:
        """Plan the batches and hand them on: to the cluster, or straight back when no worker has work in them."""
        count = 0
        try:
            for batch in timed_iter(clock, "plan", planner.batches(files, self.batch_size, cancel)):
                if not self._take_slot(cancel):
                    break  # cancelled (or closing): this planned batch is not started
                if any(source.error is None for source in batch.sources):
                    self._put((batch.index, pickle.dumps(batch, protocol=_PICKLE_PROTOCOL)))
                else:  # only complete or failed files: nothing to load, generate or compose
                    self._results.put(("batch", batch))
                count += 1
            self._results.put(("fed", count))
        except BaseException as exc:  # noqa: BLE001 - raised in the driver's thread
            self._results.put(("error", exc))
        finally:
            if self._feed_queue is not None:
                with contextlib.suppress(Exception):  # the queue is gone when the run is being closed
                    self._put(_END)

    def _take_slot(self, cancel: threading.Event | None) -> bool:
        while not self._stop.is_set() and not (cancel is not None and cancel.is_set()):
            if self._slots.acquire(timeout=0.2):
                return True
        return False

    def _put(self, item) -> None:
        """Put `item` in the feed queue (made, and the pipeline started, on the first one)."""
        from ray.util.queue import Full

        if self._feed_queue is None:
            if item is _END:
                return
            self._start_pipeline()
        while not self._stop.is_set():
            try:
                self._feed_queue.put(item, block=True, timeout=1.0)
                return
            except Full:
                continue

    def _start_pipeline(self) -> None:
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = self.engine.ray.get_runtime_context().get_node_id()
        self._feed_queue = Queue(maxsize=self.engine.max_in_flight, actor_options={
            "num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=True)})
        dataset = self._dataset(self._feed_queue)
        self._start_thread(self._drain, dataset, name="ray-drain")

    def _drain(self, dataset) -> None:
        """Pass the cluster's results to the driver's thread as they come (Ray Data's streaming execution)."""
        try:
            for row in dataset.iter_rows():
                if self._stop.is_set():
                    return
                self._results.put(("batch", pickle.loads(row["batch"])))
            self._results.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - raised in the driver's thread
            if not self._stop.is_set():
                self._results.put(("error", exc))

    def _start_thread(self, target, *args, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def close(self) -> None:
        """Stop feeding, end the pipeline (ending the queue ends the read task, then the actors), join the threads."""
        self._stop.set()
        if self._feed_queue is not None:
            with contextlib.suppress(Exception):
                self._feed_queue.shutdown(force=True)
        for thread in self._threads:
            thread.join(timeout=30)
            if thread.is_alive():
                log.warning("the Ray run's %s thread did not stop in 30 s; leaving it to finish", thread.name)

    # the cluster's side ------------------------------------------------------------------------------------
    def _dataset(self, feed_queue):
        """read → load → generate → compose (→ score), one row per planned batch (``{"index", "batch"}``)."""
        ray_data = self.engine.ray.data
        engine = self.engine
        dataset = ray_data.read_datasource(_PlannedBatches(feed_queue), override_num_blocks=1, num_cpus=0)
        # max_calls=0 is the default (a worker takes any number of tasks), stated so that the load tasks' remote
        # arguments differ from the actors': Ray Data never fuses load into the generate actors then, where
        # decoding would queue behind the model
        dataset = dataset.map_batches(_load_table, fn_kwargs={"settings_key": self.settings_key}, batch_size=1,
                                      batch_format="pyarrow", num_cpus=1, max_calls=0)
        dataset = dataset.map_batches(
            _GenerateActor, batch_size=1, batch_format="pyarrow",
            fn_constructor_kwargs={"settings": self.settings, "batch_size": self.batch_size,
                                   "generator_factory": engine.generator_factory},
            compute=ray_data.ActorPoolStrategy(size=engine.workers),
            num_cpus=engine.cpus_per_worker, num_gpus=engine.gpus_per_worker or None)
        dataset = dataset.map_batches(_compose_table, fn_kwargs={"spec": _MixerSpec.of(self.mixer, self.options.mix),
                                                                 "settings": self.settings,
                                                                 "score_settings": self.score_settings},
                                      batch_size=1, batch_format="pyarrow", num_cpus=1)
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
        # order). Both off; the in-flight limit is the backpressure.
        context.op_resource_reservation_enabled = False
        context.downstream_capacity_backpressure_ratio = None
        return dataset


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
        if item is _END:
            return
        index, payload = item
        yield _table([index], [payload])


def _table(indexes: list[int], payloads: list[bytes]) -> pyarrow.Table:
    import pyarrow as pa

    return pa.table({"index": pa.array(indexes, pa.int64()), "batch": pa.array(payloads, pa.large_binary())})


def _map_table(table: pyarrow.Table, stage: Callable[[Batch], Batch]) -> pyarrow.Table:
    """Apply `stage` to each pickled batch of a block; the project's errors travel back as :class:`_WorkerError`."""
    try:
        payloads = [pickle.dumps(stage(pickle.loads(payload)), protocol=_PICKLE_PROTOCOL)
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
@dataclass(frozen=True)
class _MixerSpec:
    """What a worker needs to rebuild the driver's :class:`Mixer` for composing: the prompt library, the run's mix
    options, and every fractal of the library as image file bytes (workers need no access to the driver's disk).
    """

    prompts: Any
    mix: MixOptions
    fractal_origin: str
    fractals: tuple[tuple[str, bytes], ...]  # (id, file bytes), in the library's order
    digest: str

    @classmethod
    def of(cls, mixer: Mixer, mix: MixOptions) -> _MixerSpec:
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


def _unpacked_fractals(spec: _MixerSpec) -> Path:
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


def _compose_table(table: pyarrow.Table, spec: _MixerSpec, settings: GenerationSettings,
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
    class's constructor takes, and becomes that class again there (:func:`_user_error`)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)
        self.kind, self.message = kind, message


def _user_error(exc: BaseException) -> BaseException:
    """The project's error that a worker raised, found inside Ray's errors, as its own class; else `exc`."""
    from . import errors

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
