"""The Ray cluster as the bulk run sees it: connecting to it (or starting a private one on this machine), its shape for
the resource plan (``ray_plan.py``), what it reports as waiting and free (for the stall watchdog), and ending what a
killed driver's private Ray left behind.

A private Ray (started by ``ray.init`` when no cluster is given or found) lives as long as its driver: Ray ends its
head processes when the driver dies, even by SIGKILL, but the raylet's agents (dashboard agent, runtime-env agent)
outlive it for about a minute. Each driver that starts one writes a record (``$TMPDIR/diffusemix-ray-drivers/<pid>``,
naming the Ray session); the next run that connects ends the processes of every recorded session whose driver is dead,
and says so. Processes are found by the session folder in their command line or open files (Linux ``/proc``; elsewhere
nothing is ended).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import signal
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import DiffuseMixError
from .ray_plan import ClusterShape

try:  # optional: the module imports without ray, so that a missing ray can be explained in one sentence
    import ray
except ImportError:  # pragma: no cover - exercised by the "ray missing" test in a subprocess
    ray = None

__all__ = ["INSTALL_HINT", "RayUnavailableError", "cluster_shape", "connect", "end_leftover_local_rays",
           "require_ray", "resource_report", "session_processes"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -r requirements-ray.txt"
FORWARDED_ENV = ("DIFFUSEMIX_ALLOW_DOWNLOAD", "HF_HUB_OFFLINE")  # set on the workers as on the driver
PACKAGE = Path(__file__).resolve().parents[1]  # diffusemix_core: shipped with the job
DRIVERS = "diffusemix-ray-drivers"  # in the temp folder: one record per driver that started a private Ray
_TERM_WAIT = 5.0  # seconds a leftover process gets to end on SIGTERM before SIGKILL


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


# ------------------------------------------------------------------------------------------------ connecting
def connect(ray_module, address: str | None) -> None:
    """Connect this process to Ray unless it is already (then the existing connection is used as it is).

    ``address``: None (a ``RAY_ADDRESS``, a cluster started with ``ray start`` on this machine, or else a new private
    Ray here, without a dashboard), ``"auto"`` or ``"HOST:PORT"``. A Ray Client address is refused.
    """
    _refuse_ray_client(ray_module, address)
    if ray_module.is_initialized():
        return
    _check_reachable(address)
    end_leftover_local_rays()
    # The engine's own code travels with the job (the cluster needs only the requirements installed), and so does
    # this process's model download policy (model_loading.py): workers load the model as this process would.
    runtime_env: dict[str, Any] = {"py_modules": [str(PACKAGE)]}
    env_vars = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    if env_vars:
        runtime_env["env_vars"] = env_vars
    try:
        context = ray_module.init(address=address, runtime_env=runtime_env, include_dashboard=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at '{address}'" if address else "a Ray cluster"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayUnavailableError(
            f"cannot connect to {where} ({reason}); start one with `ray start --head` (see docs/cluster.md) or "
            "pass --address auto or HOST:PORT from a node of the cluster."
        ) from exc
    node = getattr(ray_module._private.worker, "_global_node", None)
    if getattr(node, "head", False):  # this process started the Ray it is connected to (else it only connected)
        _record_driver(ray_module, context.address_info["session_dir"])


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


# ------------------------------------------------------------------------------------------------ the shape
def cluster_shape(ray_module) -> ClusterShape:
    """The CPUs and GPUs of the cluster's live nodes, and whether Ray reports an autoscaler that can add nodes."""
    nodes = [node.get("Resources", {}) for node in ray_module.nodes() if node.get("Alive")]
    cpus = [float(resources.get("CPU", 0)) for resources in nodes] or [0.0]
    gpus = [float(resources.get("GPU", 0)) for resources in nodes] or [0.0]
    return ClusterShape(cpus=sum(cpus), gpus=sum(gpus), node_cpus=max(cpus), node_gpus=max(gpus),
                        grows=_autoscales())


def _autoscales() -> bool:
    """Ray Data's own test (a node type of the autoscaler's config can scale up); False when Ray reports none."""
    try:
        from ray.data._internal.cluster_autoscaler.util import is_autoscaling_enabled

        return bool(is_autoscaling_enabled())
    except Exception:  # noqa: BLE001 - an internal of Ray Data: without it, the cluster is taken as it is now
        log.debug("cannot tell whether the Ray cluster autoscales", exc_info=True)
        return False


def resource_report(ray_module) -> str:
    """What Ray reports as waiting for resources and as free, in words (for the stall watchdog's error)."""
    free, total = ray_module.available_resources(), ray_module.cluster_resources()
    amounts = ", ".join(f"{_g(free.get(name, 0))} of {_g(total.get(name, 0))} {name}" for name in ("CPU", "GPU")
                        if total.get(name) or name == "CPU")
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        demands = get_cluster_status(ray_module.get_runtime_context().gcs_address).resource_demands
        waiting = [f"{request.count} x {_bundle(request.bundle)}" for demand in demands.ray_task_actor_demand
                   for request in demand.bundles_by_count]
        waiting += [f"a placement group of {', '.join(_bundle(b) for b in demand.bundles_by_count)}"
                    for demand in demands.placement_group_demand]
        pending = f"waiting for resources: {', '.join(waiting)}" if waiting else "nothing waiting for resources"
    except Exception:  # noqa: BLE001 - the autoscaler's status API: a report without it still helps
        log.debug("cannot read the Ray cluster's pending demands", exc_info=True)
        pending = "waiting for resources: not reported"
    return f"Ray reports {pending}; free: {amounts}"


def _bundle(bundle) -> str:
    bundle = getattr(bundle, "bundle", bundle)
    return "{" + ", ".join(f"{name}: {_g(value)}" for name, value in sorted(dict(bundle).items())) + "}"


def _g(value) -> str:
    return f"{float(value):g}"


# ------------------------------------------------------------------------------------------------ leftovers
def _record_driver(ray_module, session_dir: str) -> None:
    """Remember that this process started the private Ray of `session_dir` (forgotten when it exits normally)."""
    folder = _drivers_folder(create=True)
    if folder is None:
        return  # a folder of that name that is not this user's alone: no record (Ray's own timeout ends the agents)
    record = folder / str(os.getpid())
    record.write_text(json.dumps({"pid": os.getpid(), "started": _start_time(os.getpid()),
                                  "session_dir": session_dir}))
    log.info("started a private Ray on this machine (%s); it ends with this process", session_dir)

    def forget() -> None:  # at a normal exit: ray.shutdown ends every process of the session (checked here)
        ray_module.shutdown()
        with contextlib.suppress(OSError):
            record.unlink()

    atexit.register(forget)


def end_leftover_local_rays() -> int:
    """End the processes of every private Ray whose driver is dead; the number of processes ended (logged)."""
    folder = _drivers_folder(create=False)
    ended = 0
    for record in sorted(folder.glob("*")) if folder is not None else []:
        try:
            if record.lstat().st_uid != os.getuid():
                continue
            info = json.loads(record.read_text())
            pid, started, session_dir = int(info["pid"]), info["started"], str(info["session_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours
        if not _is_session_dir(session_dir):
            continue
        if _start_time(pid) == started and started is not None:
            continue  # its driver is alive: its Ray is in use
        pids = session_processes(session_dir)
        if pids:
            _end(pids)
            log.warning("ended %d process(es) of the private Ray that a killed run (pid %d) left behind (%s)",
                        len(pids), pid, session_dir)
            ended += len(pids)
        with contextlib.suppress(OSError):
            record.unlink()
    return ended


def _drivers_folder(*, create: bool) -> Path | None:
    """The records' folder, only if this user owns it and no one else may write in it (the temp folder is shared)."""
    folder = Path(tempfile.gettempdir()) / DRIVERS
    try:
        if create:
            folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        log.debug("ignoring %s: not a folder of this user's alone", folder)
        return None
    return folder


def _is_session_dir(path: str) -> bool:
    """A Ray session folder's path (``.../session_<date>_<time>_<pid>``): never a prefix of anything else."""
    candidate = Path(path)
    return candidate.is_absolute() and ".." not in candidate.parts and bool(
        re.fullmatch(r"session_[0-9][0-9_-]*", candidate.name))


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (with the pid, it names one process); None when there is
    no such process (or it has ended and waits to be reaped), or no /proc to tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def session_processes(session_dir: str) -> list[int]:
    """The processes of this user whose command line or open files are in `session_dir` (Linux; elsewhere [])."""
    prefix = session_dir.rstrip("/") + "/"
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            if prefix in (entry / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ") or any(
                    os.readlink(fd).startswith(prefix) for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
        except OSError:  # ended meanwhile, or not readable
            continue
    return found


def _end(pids: list[int]) -> None:
    """SIGTERM each process, then SIGKILL those still there after a few seconds."""
    started = {pid: _start_time(pid) for pid in pids}
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _TERM_WAIT
    while time.monotonic() < deadline and any(_start_time(p) == s and s is not None for p, s in started.items()):
        time.sleep(0.1)
    for pid, start in started.items():
        if start is not None and _start_time(pid) == start:  # the same process, not a new one with its pid
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
