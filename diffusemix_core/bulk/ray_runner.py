"""The bulk run on a Ray cluster: the same stages as ``runner.py``, run as Ray Data operators.

    driver                          Ray Data (one streaming execution for the whole run)              driver
    plan ──► bounded queue ──► read ──► load (CPU tasks) ──► generate (actor pool) ──► compose (CPU tasks) ──► commit

* **plan** stays on the driver: :class:`stages.Planner` reads and hashes every file, asks the manifest which
  slots are missing and draws their choices. Each planned :class:`Batch` (with the file's bytes and any cached Î's
  bytes: no shared file system is needed) is pickled into a Ray queue actor. At most ``max_in_flight`` batches are
  planned but not yet committed at any time, so memory stays bounded whatever the dataset's size.
* **read, load, generate, compose** run on the cluster (``ray_stages.py``): the local engine's stage functions,
  unchanged, one Ray row per planned batch, so the model sees the very batches the local engine gives it, and the
  results are the same, byte for byte. The CPUs and GPUs they take are planned before anything starts
  (``ray_plan.py``): the actors never hold the CPUs the load and compose tasks need, and a configuration that can
  never run is refused in one sentence.
* **commit** stays on the driver, the only writer of the manifest: results come back by ``iter_rows`` as they are
  made, are put back in plan order and committed one transaction per batch with :class:`stages.Commit`.

Faults: Ray Data restarts a dead actor and retries its batches (actor pools default to ``max_restarts=-1`` and
``max_task_retries=-1``; CPU tasks are retried when their worker dies). A killed driver loses nothing committed: run
the same command again (``Workspace.gc`` removes the files its journal names); the private Ray it started is ended by
the next run (``ray_cluster.py``). Cancel: no batch is planned after ``cancel`` is set; the batches already handed to
the workers (at most ``max_in_flight``) are finished and committed. Stalls: when no batch comes back for
``stall_timeout`` seconds while some are on the cluster, the run stops with what Ray reports as waiting and free
(what was committed stays; the same command resumes).

``ray`` is an optional dependency (``requirements-ray.txt``); nothing else in the package imports this module.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from .ray_cluster import INSTALL_HINT, RayUnavailableError, cluster_shape, connect, require_ray, resource_report
from .ray_plan import plan_resources
from .ray_stages import END, PICKLE_PROTOCOL, MixerSpec, build_dataset, pipeline_report, stop_pipeline, user_error
from .options import AugmentOptions
from .plan import Planner
from .stages import Batch
from .timing import timed_iter
from ..checks import check_int
from ..errors import BadArgumentError, DiffuseMixError

if TYPE_CHECKING:
    from ..engine.diffusemix import Mixer

__all__ = ["DEFAULT_STALL_TIMEOUT", "INSTALL_HINT", "RayRunner", "RayStalledError", "RayUnavailableError",
           "require_ray"]

log = logging.getLogger(__name__)

IN_FLIGHT_PER_WORKER = 4  # planned-but-uncommitted batches per actor: two queued at the actor, one each side
DEFAULT_STALL_TIMEOUT = 900.0  # seconds with batches on the cluster and none back (a model's first load included)


class RayStalledError(DiffuseMixError):
    """No batch came back from the Ray cluster for the stall timeout while some were being processed there."""


# ------------------------------------------------------------------------------------------------ the engine
class RayRunner:
    """Where and how a bulk run executes on Ray: the cluster's address and the generate actors' resources, from the
    run's options (``options.AugmentOptions``: ``ray_address``, ``workers``, ``gpus_per_worker``, ``cpus_per_worker``,
    ``stall_timeout``).

    ``address`` is passed to ``ray.init`` when this process is not connected yet: None (a ``RAY_ADDRESS``, a cluster
    started with ``ray start`` on this machine, or else a new private Ray here), ``"auto"`` or ``"HOST:PORT"``; this
    process must run on a node of the cluster (Ray Data cannot stream through a Ray Client ``ray://`` connection).
    ``workers`` generate actors (default: as many as the cluster's GPUs allow, else 1), each holding
    ``gpus_per_worker`` GPUs (default 1 when the cluster has GPUs, else 0) and ``cpus_per_worker`` CPUs (default: 1,
    or the fraction that leaves the load and compose tasks their CPUs); the plan (``self.plan``, ``ray_plan.py``) is
    made here, from the cluster's shape, and a configuration that can never run raises BadArgumentError.
    ``generator_factory`` (tests and benchmarks) builds each actor's generator instead of ``Pix2PixGenerator``; it
    is pickled to the workers. ``stall_timeout``: seconds without a batch back while some are on the cluster before
    the run stops with :class:`RayStalledError` (default ``DEFAULT_STALL_TIMEOUT``; 0: wait forever).
    """

    # ---- Where the run's options reach the Ray runner: its own fields here, the mix, generation and scorer settings
    # in stages() (handed on to the workers as ray_stages.MixerSpec, GenerationSettings and the score settings).
    def __init__(self, options: AugmentOptions, *, generator_factory: Callable[[], Any] | None = None,
                 max_in_flight: int | None = None) -> None:
        address, workers, stall_timeout = options.ray_address, options.workers, options.stall_timeout
        gpus_per_worker, cpus_per_worker = options.gpus_per_worker, options.cpus_per_worker
        if workers is not None:
            workers = check_int("workers", workers, minimum=1)
        gpus_per_worker = _check_resource("gpus_per_worker", gpus_per_worker, allow_zero=True)
        cpus_per_worker = _check_resource("cpus_per_worker", cpus_per_worker, allow_zero=False)
        if stall_timeout is not None and (isinstance(stall_timeout, bool) or not isinstance(stall_timeout, (int, float))
                                          or not 0 <= stall_timeout < float("inf")):
            raise BadArgumentError(f"stall_timeout must be a number of seconds >= 0 (0: wait forever), got "
                                   f"{stall_timeout!r}.")
        if max_in_flight is not None:
            max_in_flight = check_int("max_in_flight", max_in_flight, minimum=1)
        self.ray = require_ray()
        self.address = address
        connect(self.ray, address)
        self.plan = plan_resources(cluster_shape(self.ray), workers=workers, gpus_per_worker=gpus_per_worker,
                                   cpus_per_worker=cpus_per_worker)
        for warning in self.plan.warnings:
            log.warning("%s", warning)
        log.info("Ray plan: %s", self.plan.describe())
        self.generator_factory = generator_factory
        self.max_in_flight = max_in_flight or IN_FLIGHT_PER_WORKER * self.plan.workers + 2
        self.stall_timeout = DEFAULT_STALL_TIMEOUT if stall_timeout is None else stall_timeout

    def describe(self) -> dict:
        """The engine's settings, for the run's record in the manifest."""
        plan = self.plan
        return {"name": "ray", "address": self.address, "workers": plan.workers,
                "gpus_per_worker": plan.gpus_per_worker, "cpus_per_worker": plan.cpus_per_worker,
                "stage_cpus": plan.stage_cpus}

    @contextlib.contextmanager
    def stages(self, mixer: Mixer, options: AugmentOptions, *, score=None) -> Iterator[Callable[..., Iterator[Batch]]]:
        """A function ``(planner, files, cancel, clock) -> batches`` like ``runner._stages``; all stops on exit.

        `options` are the run's, resolved (its generator's settings, a whole batch size); `score` (a
        ``score_stage.Score``) adds the scores stage after compose, in the compose tasks.
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


# ------------------------------------------------------------------------------------------------ one run
class _RayRun:
    """One bulk run's Ray side: the feed queue, the dataset, and the threads that feed it and drain it."""

    def __init__(self, runner: RayRunner, mixer: Mixer, options: AugmentOptions, *, score=None) -> None:
        self.runner, self.mixer, self.options = runner, mixer, options
        self.settings, self.batch_size = options.settings, options.batch_size
        # the scorer runs in the compose tasks, on the CPU: the GPUs belong to the generate workers, CLIP-B/32
        # costs under 0.1% of a generation's FLOPs (bench/score.py), and a separate actor pool would hold CPUs the
        # load and compose tasks need (it deadlocked a 2-CPU cluster)
        self.score_settings = None if score is None else {**score.settings(), "device": "cpu", "dtype": "float32"}
        self._results: queue.Queue = queue.Queue()  # ("batch", Batch) | ("fed", n) | ("done", None) | ("error", e)
        self._slots = threading.BoundedSemaphore(runner.max_in_flight)
        self._stop = threading.Event()
        self._feed_queue = None  # the Ray queue actor, made when the first batch needs the workers
        self._dataset = None  # the Ray Data pipeline, started with the queue
        self._threads: list[threading.Thread] = []
        self._sent = self._returned = 0  # batches handed to the cluster, and come back from it (for the watchdog)

    # the driver's side ------------------------------------------------------------------------------------
    def batches(self, planner: Planner, files, cancel: threading.Event | None,
                clock: dict[str, float] | None = None) -> Iterator[Batch]:
        """Every planned batch, processed by the cluster, in plan order (at most ``max_in_flight`` at a time).

        The planner's CPU time is added to ``clock["plan"]``; the other stages' CPU time is spent on the cluster.
        """
        self._start_thread(self._feed, planner, files, cancel, {} if clock is None else clock, name="ray-feed")
        waiting: dict[int, Batch] = {}
        next_index, total, drained = 0, None, False
        progress_at = time.monotonic()  # the last commit, or the last moment with nothing on the cluster
        while total is None or next_index < total:
            try:
                kind, value = self._results.get(timeout=0.5)
            except queue.Empty:
                kind = value = None
            now = time.monotonic()
            if self._returned >= self._sent:
                progress_at = now
            elif self.runner.stall_timeout and now - progress_at > self.runner.stall_timeout:
                raise self._stalled(now - progress_at)
            if kind == "error":
                raise user_error(value)
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
                progress_at = time.monotonic()
            if drained and total is not None and next_index < total:  # everything that will come has come
                raise DiffuseMixError(
                    f"{total - next_index} batch(es) of this run did not come back from the Ray cluster (a worker "
                    "of the pipeline died); rerun the same command to finish them."
                )

    def _stalled(self, seconds: float) -> RayStalledError:
        """The watchdog's error: how long, how much is out, and what Ray says is waiting and free."""
        try:
            report = resource_report(self.runner.ray)
        except Exception as exc:  # noqa: BLE001 - the report is a help; the stall is the error
            report = f"Ray's report failed: {type(exc).__name__}: {exc}"
        pipeline = pipeline_report(self._dataset)
        report = f"{report}; {pipeline}" if pipeline else report
        return RayStalledError(
            f"no batch came back from the Ray cluster for {seconds:.0f} s while {self._sent - self._returned} "
            f"batch(es) were being processed there ({report}); what was committed is kept: rerun the same command "
            "to resume, after checking `ray status` (or raise --stall-timeout if a batch really takes that long)."
        )

    def _feed(self, planner: Planner, files, cancel: threading.Event | None, clock: dict[str, float]) -> None:
        """Plan the batches and hand them on: to the cluster, or straight back when no worker has work in them."""
        count = 0
        try:
            for batch in timed_iter(clock, "plan", planner.batches(files, self.batch_size, cancel)):
                if not self._take_slot(cancel):
                    break  # cancelled (or closing): this planned batch is not started
                if any(source.error is None for source in batch.sources):
                    self._sent += 1
                    self._put((batch.index, pickle.dumps(batch, protocol=PICKLE_PROTOCOL)))
                else:  # only complete or failed files: nothing to load, generate or compose
                    self._results.put(("batch", batch))
                count += 1
            self._results.put(("fed", count))
        except BaseException as exc:  # noqa: BLE001 - raised in the driver's thread
            self._results.put(("error", exc))
        finally:
            if self._feed_queue is not None:
                with contextlib.suppress(Exception):  # the queue is gone when the run is being closed
                    self._put(END)

    def _take_slot(self, cancel: threading.Event | None) -> bool:
        while not self._stop.is_set() and not (cancel is not None and cancel.is_set()):
            if self._slots.acquire(timeout=0.2):
                return True
        return False

    def _put(self, item) -> None:
        """Put `item` in the feed queue (made, and the pipeline started, on the first one)."""
        from ray.util.queue import Full

        if self._feed_queue is None:
            if item is END:
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

        here = self.runner.ray.get_runtime_context().get_node_id()
        self._feed_queue = Queue(maxsize=self.runner.max_in_flight, actor_options={
            "num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=True)})
        self._dataset = build_dataset(self.runner.ray, self._feed_queue, self.runner.plan, settings=self.settings,
                                      batch_size=self.batch_size, spec=MixerSpec.of(self.mixer, self.options.mix),
                                      score_settings=self.score_settings,
                                      generator_factory=self.runner.generator_factory)
        self._start_thread(self._drain, self._dataset, name="ray-drain")

    def _drain(self, dataset) -> None:
        """Pass the cluster's results to the driver's thread as they come (Ray Data's streaming execution)."""
        try:
            for row in dataset.iter_rows():
                if self._stop.is_set():
                    return
                self._returned += 1
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
        """Stop feeding, end the pipeline (its actors and tasks) and the queue, join the threads."""
        self._stop.set()
        if self._dataset is not None:
            try:
                stop_pipeline(self._dataset)
            except Exception:  # noqa: BLE001 - ending the queue below ends the read task, then the pipeline
                log.debug("Ray Data's shutdown of the run's pipeline failed", exc_info=True)
        if self._feed_queue is not None:
            with contextlib.suppress(Exception):
                self._feed_queue.shutdown(force=True)
        for thread in self._threads:
            thread.join(timeout=30)
            if thread.is_alive():
                log.warning("the Ray run's %s thread did not stop in 30 s; leaving it to finish", thread.name)

