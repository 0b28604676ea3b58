"""How a Ray run shares the cluster's CPUs and GPUs: the generate actors beside the CPU stages, planned before anything
starts (pure arithmetic on the cluster's shape; no Ray here, so every rule is tested without a cluster).

The generate actors hold their CPUs and GPUs for the whole run; the load and compose tasks come and go. If the actors
hold every CPU, the tasks wait for one forever and the run hangs without a word (seen on a 2-CPU machine with two
workers of one CPU each). So the plan keeps CPUs for the tasks first and gives the actors the rest:

* ``stage_cpus`` = min(1, CPUs / 2): each load or compose task takes that many, and that many are never given to the
  actors, so at least one of those tasks can always run.
* Without ``--cpus-per-worker``, an actor takes min(1, (CPUs - reserved) / workers): a fraction where CPUs are few (two
  workers on 2 CPUs: 0.5 each; a GPU actor needs little CPU to drive its GPU).
* With ``--cpus-per-worker``, workers that would eat into the reserve do not start (a warning says how many run and
  what to pass to run them all) on a cluster that cannot grow.
* A configuration that can never run is refused in one sentence before anything starts: an actor larger than any
  node, GPUs asked of a cluster with none, an actor that leaves no CPU for the CPU stages.

A cluster whose autoscaler can add nodes (as Ray reports it) is planned on what it has now, but not refused or cut for
resources it may get: its workers wait for the nodes they need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import BadArgumentError

__all__ = ["ClusterShape", "ResourcePlan", "plan_resources"]

STAGE_CPUS = 1.0  # a load or compose task's CPUs, where the cluster has them to spare
_GRAIN = 10_000  # Ray accounts resources in units of 1/10000


@dataclass(frozen=True)
class ClusterShape:
    """What a Ray cluster has now: its CPUs and GPUs in all, the most of each on one node, and whether it grows."""

    cpus: float
    gpus: float
    node_cpus: float  # the most CPUs one node has
    node_gpus: float  # the most GPUs one node has
    grows: bool = False  # an autoscaler can add nodes

    def describe(self) -> str:
        grows = "autoscaling" if self.grows else "fixed size"
        return f"{_amount(self.cpus, 'CPU')} and {_amount(self.gpus, 'GPU')}, {grows}"


@dataclass(frozen=True)
class ResourcePlan:
    """The run's share of the cluster: ``workers`` generate actors of ``cpus_per_worker`` CPUs and ``gpus_per_worker``
    GPUs each; load and compose tasks of ``stage_cpus`` CPUs each, a share the actors never hold.
    ``warnings``: what was changed from what was asked, and why (the caller logs them)."""

    cluster: ClusterShape
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    stage_cpus: float
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line with the numbers, for the run's log."""
        gpus = f" + {_amount(self.gpus_per_worker, 'GPU')}" if self.gpus_per_worker else ""
        return (f"the Ray cluster has {self.cluster.describe()}: {self.workers} generate worker(s) x "
                f"{_amount(self.cpus_per_worker, 'CPU')}{gpus}; {_amount(self.stage_cpus, 'CPU')} kept for the load "
                f"and compose tasks, which take as much each")


def plan_resources(cluster: ClusterShape, *, workers: int | None = None, gpus_per_worker: float | None = None,
                   cpus_per_worker: float | None = None) -> ResourcePlan:
    """The plan for `cluster` and what was asked (None: the defaults), or BadArgumentError if it can never run."""
    warnings: list[str] = []
    fixed = not cluster.grows
    gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if cluster.gpus else 0.0)
    if gpus and fixed:
        if not cluster.gpus:
            raise BadArgumentError(
                f"--gpus-per-worker {_number(gpus)} asks for GPUs and the Ray cluster has none "
                f"({cluster.describe()}): pass --gpus-per-worker 0 to generate on its CPUs, or add GPU nodes.")
        if gpus > cluster.node_gpus:
            raise BadArgumentError(
                f"--gpus-per-worker {_number(gpus)} is more than any node of the Ray cluster has "
                f"({_amount(cluster.node_gpus, 'GPU')}): pass --gpus-per-worker {_number(cluster.node_gpus)} or less "
                "(a fraction shares a GPU).")
    if workers is None:
        workers = max(1, int(cluster.gpus // gpus)) if gpus else 1
    elif gpus and workers * gpus > cluster.gpus:
        if fixed:
            fit = max(1, int(cluster.gpus // gpus))
            warnings.append(f"the Ray cluster has {_amount(cluster.gpus, 'GPU')}: {fit} of the {workers} workers "
                            f"asked for run ({_number(gpus)} GPU each)")
            workers = fit
        else:
            warnings.append(f"the Ray cluster has {_amount(cluster.gpus, 'GPU')} now and {workers} worker(s) x "
                            f"{_number(gpus)} GPU(s) were asked for: the workers that do not fit wait until the "
                            "cluster grows")

    if cluster.cpus <= 0:
        raise BadArgumentError(f"the Ray cluster has no CPU ({cluster.describe()}), and the load and compose tasks "
                               "need some: add a node with CPUs.")
    reserved = _floor(min(STAGE_CPUS, cluster.cpus / 2))
    spare = cluster.cpus - reserved  # what the actors may hold
    if cpus_per_worker is None:
        cpus = _floor(min(1.0, spare / workers, cluster.node_cpus))
    else:
        cpus = cpus_per_worker
        most = _floor(min(spare, cluster.node_cpus))
        if fixed and cpus > most:
            raise BadArgumentError(
                f"--cpus-per-worker {_number(cpus)} can never be scheduled beside the load and compose tasks: the "
                f"Ray cluster has {_amount(cluster.cpus, 'CPU')} (at most {_number(cluster.node_cpus)} on one node) "
                f"and those tasks need {_number(reserved)}; pass --cpus-per-worker {_number(most)} or less "
                "(a fraction is fine).")
        fit = int(spare / cpus + 1e-9)
        if fixed and workers > fit:
            warnings.append(
                f"the Ray cluster has {_amount(cluster.cpus, 'CPU')}: {workers} workers x {_number(cpus)} CPU would "
                f"leave less than {_number(reserved)} for the load and compose tasks, so {fit} worker(s) run (pass "
                f"--cpus-per-worker {_number(_floor(spare / workers))} to run {workers})")
            workers = fit
    return ResourcePlan(cluster=cluster, workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus,
                        stage_cpus=reserved, warnings=tuple(warnings))


def _floor(value: float) -> float:
    """`value` rounded down to Ray's resource grain (so that sums of fractions never exceed what they share)."""
    return math.floor(value * _GRAIN + 1e-6) / _GRAIN


def _number(value: float) -> str:
    return f"{value:g}"


def _amount(value: float, unit: str) -> str:
    return f"{value:g} {unit}{'' if 0 < value <= 1 else 's'}"
