"""The Ray run's resource plan (``bulk/ray_plan.py``): pure arithmetic on the cluster's shape, tested without Ray.

The runs on tight local Rays that use these plans are in test_ray_tight.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diffusemix_core.bulk.ray_plan import ClusterShape, plan_resources
from diffusemix_core.errors import BadArgumentError


def cpu_cluster(cpus: float) -> ClusterShape:
    return ClusterShape(cpus=cpus, gpus=0, node_cpus=cpus, node_gpus=0)


@pytest.mark.parametrize("cpus, workers, per_worker, stage", [
    (2, 2, 0.5, 1.0),  # the 2-CPU machine with --workers 2: it hung with two 1-CPU actors
    (1, 2, 0.25, 0.5),
    (1, 1, 0.5, 0.5),
    (16, 2, 1.0, 1.0),  # enough CPUs: the default of one CPU per worker
    (3, 4, 0.5, 1.0),
])
def test_the_actors_leave_the_load_and_compose_tasks_their_cpus(cpus, workers, per_worker, stage):
    plan = plan_resources(cpu_cluster(cpus), workers=workers)
    assert (plan.workers, plan.cpus_per_worker, plan.gpus_per_worker, plan.stage_cpus) == (workers, per_worker, 0,
                                                                                            stage)
    assert plan.workers * plan.cpus_per_worker + plan.stage_cpus <= cpus
    assert not plan.warnings
    text = plan.describe()  # the numbers, in the run's log
    assert f"{workers} generate worker(s) x {per_worker:g} CPU" in text and f"{cpus:g} CPU" in text


@given(cpus=st.integers(1, 256).map(float) | st.sampled_from([0.5, 1.5, 2.5]), gpus=st.integers(0, 16),
       workers=st.none() | st.integers(1, 64), per_worker=st.none() | st.sampled_from([0.1, 0.5, 1.0, 2.0, 4.0]))
def test_whatever_is_asked_a_plan_never_gives_the_actors_the_cpus_the_tasks_need(cpus, gpus, workers, per_worker):
    cluster = ClusterShape(cpus=cpus, gpus=float(gpus), node_cpus=cpus, node_gpus=float(gpus))
    try:
        plan = plan_resources(cluster, workers=workers, cpus_per_worker=per_worker)
    except BadArgumentError as refused:
        assert per_worker is not None and per_worker > cpus - min(1.0, cpus / 2), refused  # only what can never fit
        return
    assert plan.workers >= 1 and plan.stage_cpus > 0 and plan.cpus_per_worker > 0
    assert plan.workers * plan.cpus_per_worker + plan.stage_cpus <= cpus + 1e-9
    assert plan.workers * plan.gpus_per_worker <= max(gpus, 0) + 1e-9


def test_a_gpu_node_with_as_many_cpus_as_gpus_gives_each_gpu_worker_a_fraction():
    """The cluster case of the issue: one GPU per worker and few CPUs per GPU."""
    plan = plan_resources(ClusterShape(cpus=4, gpus=4, node_cpus=4, node_gpus=4))
    assert (plan.workers, plan.gpus_per_worker, plan.cpus_per_worker, plan.stage_cpus) == (4, 1.0, 0.75, 1.0)
    assert "+ 1 GPU" in plan.describe()


def test_workers_that_would_eat_the_reserve_do_not_start_and_a_warning_says_what_to_pass():
    plan = plan_resources(cpu_cluster(2), workers=2, cpus_per_worker=1)
    assert (plan.workers, plan.cpus_per_worker) == (1, 1)
    assert len(plan.warnings) == 1 and "so 1 worker(s) run (pass --cpus-per-worker 0.5 to run 2)" in plan.warnings[0]


def test_gpu_workers_beyond_a_fixed_clusters_gpus_do_not_start_and_an_autoscaling_cluster_waits():
    fixed = plan_resources(ClusterShape(cpus=8, gpus=2, node_cpus=8, node_gpus=2), workers=4, gpus_per_worker=1)
    assert fixed.workers == 2 and "2 of the 4 workers asked for run" in fixed.warnings[0]
    growing = plan_resources(ClusterShape(cpus=8, gpus=0, node_cpus=8, node_gpus=0, grows=True), workers=4,
                             gpus_per_worker=1)
    assert growing.workers == 4 and "wait until the cluster grows" in growing.warnings[0]


@pytest.mark.parametrize("cluster, asked, says, remedy", [
    (cpu_cluster(2), {"cpus_per_worker": 4}, "--cpus-per-worker 4 can never be scheduled beside the load and compose "
     "tasks: the Ray cluster has 2 CPUs", "pass --cpus-per-worker 1 or less"),
    (cpu_cluster(1), {"cpus_per_worker": 1}, "--cpus-per-worker 1 can never be scheduled", "pass --cpus-per-worker "
     "0.5 or less"),
    (cpu_cluster(2), {"gpus_per_worker": 1}, "--gpus-per-worker 1 asks for GPUs and the Ray cluster has none",
     "pass --gpus-per-worker 0"),
    (ClusterShape(cpus=16, gpus=4, node_cpus=8, node_gpus=2), {"gpus_per_worker": 4},
     "--gpus-per-worker 4 is more than any node of the Ray cluster has (2 GPUs)", "pass --gpus-per-worker 2 or less"),
    (ClusterShape(cpus=0, gpus=1, node_cpus=0, node_gpus=1), {}, "the Ray cluster has no CPU", "add a node with CPUs"),
])
def test_a_configuration_that_can_never_run_is_refused_in_one_sentence(cluster, asked, says, remedy):
    with pytest.raises(BadArgumentError) as refused:
        plan_resources(cluster, workers=2, **asked)
    message = str(refused.value)
    assert message.startswith(says) and remedy in message, message
    assert "\n" not in message and message.count(". ") == 0 and message.endswith(".")
