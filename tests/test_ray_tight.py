"""The Ray engine on tight local Rays (issue 16, item 2), driven as a user runs it.

The issue's command, `augment --train-dir <15 photos, 6 classes> --per-image 2 --model tiny-random --resolution 64
--steps 2 --engine ray --workers 2`, stayed at 0/30 forever on a 2-CPU machine: the two generate actors held both CPUs
and the load tasks waited for one. Here it runs against a local Ray of 2 CPUs and of 1 CPU and must finish with exactly
15 x 2 augmentations; what can never run is refused in one sentence; and the stall watchdog stops a run that makes no
progress (the issue's deadlock, forced back; an actor that hangs), with what Ray reports, and the next run resumes.
No test here can hang: each command has a timeout, and so has each test.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.bulk.ray_runner import RayStalledError
from diffusemix_core.bulk.options import AugmentOptions
from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.engine.generation import GenerationSettings
from diffusemix_core.engine.pix2pix import Pix2PixGenerator
from diffusemix_core.workspace.folder import Workspace
from helpers import ROOT, cli_env
from test_cli_workspace import _smooth, assert_store_consistent, rows
from test_ray import _ray

pytestmark = pytest.mark.timeout(900)

CLASSES = {"bird": 3, "cat": 3, "dog": 3, "fish": 2, "fox": 2, "owl": 2}  # 15 photos, 6 classes
PER_IMAGE = 2
N_M = 15 * PER_IMAGE
ISSUE_FLAGS = ["--per-image", str(PER_IMAGE), "--model", "tiny-random", "--resolution", "64", "--steps", "2",
               "--engine", "ray", "--workers", "2", "--no-progress"]
SETTINGS = GenerationSettings(model="tiny-random", resolution=64, steps=2)
COMMAND_TIMEOUT = 420  # a command that runs longer has hung: the test fails instead of waiting


@pytest.fixture(scope="module", params=[2, 1], ids=["2-cpus", "1-cpu"])
def cluster(request):
    """A local Ray of `request.param` CPUs; yields (cpus, address) for drivers in other processes."""
    ray = _ray()
    context = ray.init(num_cpus=request.param, include_dashboard=False, object_store_memory=100 * 2**20,
                       logging_level="warning")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the stalling generator below
    yield request.param, context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos") / "train"
    rng = np.random.default_rng(16)
    for label, count in CLASSES.items():
        (root / label).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(_smooth(rng, 40 + 4 * i, 56 - 4 * i)).save(root / label / f"photo {i}.jpg", quality=92)
    return root


def augment(photos: Path, ws: Path, address: str, *extra: str, code: str | None = None, verbose: bool = False
            ) -> subprocess.CompletedProcess:
    """The issue's command against the cluster at `address` (``code``: a Python prelude instead of ``-m``;
    ``verbose``: -v, the run's log at INFO)."""
    start = ["-c", code] if code else ["-m", "diffusemix_core"]
    return subprocess.run([sys.executable, *start, *(["-v"] if verbose else []), "augment", "--train-dir", str(photos),
                           "--workspace", str(ws), *ISSUE_FLAGS, "--address", address, *extra],
                          env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def assert_exactly_n_m(ws: Path) -> None:
    assert rows(ws, "SELECT count(*) FROM augmentations") == [(N_M,)]
    assert rows(ws, "SELECT count(*) FROM (SELECT source_id, job_key FROM augmentations "
                    "GROUP BY source_id, job_key HAVING count(*) > 1)") == [(0,)]
    assert_store_consistent(ws)


def engine_record(ws: Path) -> list[dict]:
    return [json.loads(args)["engine"] for (args,) in rows(ws, "SELECT args FROM runs ORDER BY id")]


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1] if stderr.strip() else ""


def wait_until_free(ray, cpus: float, within: float = 90.0) -> None:
    """The run's actors and tasks are gone: every CPU of the cluster is free again (a stopped run holds nothing)."""
    deadline = time.monotonic() + within
    while ray.available_resources().get("CPU", 0) < cpus and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == cpus, ray.available_resources()


# the issue's command -----------------------------------------------------------------------------------------
def test_the_issues_command_finishes_exactly_on_a_tight_local_ray(cluster, photos, tmp_path):
    cpus, address = cluster
    ws = tmp_path / "ws"
    result = augment(photos, ws, address, verbose=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert_exactly_n_m(ws)
    per_worker, stage = {2: (0.5, 1.0), 1: (0.25, 0.5)}[cpus]
    plan = (f"Ray plan: the Ray cluster has {cpus} CPU{'s' if cpus > 1 else ''} and 0 GPUs, fixed size: 2 generate "
            f"worker(s) x {per_worker:g} CPU; {stage:g} CPU")
    assert plan in result.stderr  # the numbers, in the run's log
    assert engine_record(ws) == [{"name": "ray", "address": address, "workers": 2, "gpus_per_worker": 0.0,
                                  "cpus_per_worker": per_worker, "stage_cpus": stage}]


@pytest.mark.parametrize("flags, says", [
    (["--cpus-per-worker", "4"], "--cpus-per-worker 4 can never be scheduled beside the load and compose tasks: "
                                 "the Ray cluster has {cpus}"),
    (["--gpus-per-worker", "1"], "--gpus-per-worker 1 asks for GPUs and the Ray cluster has none"),
])
def test_what_can_never_run_is_refused_in_one_sentence_before_anything_starts(cluster, photos, tmp_path, flags,
                                                                               says):
    cpus, address = cluster
    ws = tmp_path / "ws"
    result = augment(photos, ws, address, *flags)
    line = last_line(result.stderr)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert line.startswith("error: " + says.format(cpus=f"{cpus} CPU")), result.stderr[-3000:]
    assert "pass --" in line and line.count(". ") == 0 and line.endswith(".")  # the remedy, in one sentence
    assert not (ws / "manifest.sqlite").exists() or rows(ws, "SELECT count(*) FROM runs") == [(0,)]


@pytest.mark.parametrize("cluster", [2], indirect=True)
def test_workers_that_do_not_fit_beside_the_cpu_stages_are_fewer_with_a_warning(cluster, photos, tmp_path):
    _, address = cluster
    ws = tmp_path / "ws"
    result = augment(photos, ws, address, "--cpus-per-worker", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("the Ray cluster has 2 CPUs: 2 workers x 1 CPU would leave less than 1 for the load and compose tasks, "
            "so 1 worker(s) run (pass --cpus-per-worker 0.5 to run 2)") in result.stderr
    assert_exactly_n_m(ws)
    assert engine_record(ws)[0]["workers"] == 1


# the stall watchdog ------------------------------------------------------------------------------------------
# The plan before this fix: two 1-CPU actors on 2 CPUs, load and compose tasks of 1 CPU (what hung for 20 minutes).
OLD_PLAN = """
import sys
from diffusemix_core.bulk import ray_runner
from diffusemix_core.bulk.ray_plan import ResourcePlan
ray_runner.plan_resources = lambda cluster, **asked: ResourcePlan(
    cluster=cluster, workers=2, cpus_per_worker=1.0, gpus_per_worker=0.0, stage_cpus=1.0)
from diffusemix_core.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("cluster", [2], indirect=True)
def test_the_watchdog_stops_the_issues_deadlock_with_what_ray_reports_and_the_next_run_resumes(cluster, photos,
                                                                                               tmp_path):
    ray = _ray()
    _, address = cluster
    ws = tmp_path / "ws"
    started = time.monotonic()
    stuck = augment(photos, ws, address, "--stall-timeout", "10", code=OLD_PLAN)
    line = last_line(stuck.stderr)
    assert stuck.returncode == 1 and "Traceback" not in stuck.stderr, stuck.stderr[-3000:]
    assert time.monotonic() - started < COMMAND_TIMEOUT
    assert line.startswith("error: no batch came back from the Ray cluster for 1"), line  # 10 s and a little
    assert "batch(es) were being processed there (Ray reports " in line, line
    assert "free: 0 of 2 CPU" in line and "MapBatches(_load_table) " in line, line  # the actors hold every CPU
    assert "rerun the same command to resume" in line and "--stall-timeout" in line and line.count(". ") == 0
    wait_until_free(ray, 2)  # the stopped run let go of the cluster
    again = augment(photos, ws, address)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_exactly_n_m(ws)


class HangsAfterACommit:
    """The tiny model, whose generate calls hang once the driver has committed a batch (it writes `folder/committed`):
    a stuck GPU, a wedged driver. A test-only generator: it reaches the workers through run_augment's
    generator_factory hook."""

    def __init__(self, settings: GenerationSettings, folder: Path) -> None:
        self.inner, self.folder = Pix2PixGenerator(settings), folder

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, requests, **kwargs):
        if (self.folder / "committed").exists():
            (self.folder / f"hung-{os.getpid()}").touch()
            time.sleep(3600)
        return self.inner.generate(requests, **kwargs)


STALL = 40  # seconds: more than a first batch takes here (actors start, the model loads), with the machine loaded


@pytest.mark.parametrize("cluster", [2], indirect=True)
def test_a_hung_worker_stops_the_run_after_the_stall_timeout_and_the_rerun_adds_only_the_rest(cluster, photos,
                                                                                              tmp_path):
    ray = _ray()
    ws = Workspace(tmp_path / "ws")
    marks = tmp_path / "marks"
    marks.mkdir()
    # one photo per batch: 15 batches, of which at most 4 x 2 + 2 are out before the first commit, so the
    # workers are sure to hang on some
    job = {"per_image": PER_IMAGE, "settings": SETTINGS, "runner": "ray", "workers": 2, "batch_size": 1}
    started = time.monotonic()
    with pytest.raises(RayStalledError) as stalled:
        run_augment(ws, photos, AugmentOptions(**job, stall_timeout=STALL),
                    progress=lambda p: p.done and (marks / "committed").touch(),
                    generator_factory=functools.partial(HangsAfterACommit, SETTINGS, marks))
    assert list(marks.glob("hung-*")) and time.monotonic() - started < 300
    message = str(stalled.value)
    assert message.startswith("no batch came back from the Ray cluster for ") and "Ray reports " in message
    assert "free: " in message and " of 2 CPU" in message and "\n" not in message
    committed = rows(ws.path, "SELECT count(*) FROM augmentations")[0][0]
    assert 0 < committed < N_M and committed % PER_IMAGE == 0, message  # what was made before the hang is kept
    assert rows(ws.path, "SELECT finished_at IS NOT NULL FROM runs") == [(1,)]  # the run was closed properly
    wait_until_free(ray, 2)  # the hung actors were ended with the run
    rest = run_augment(ws, photos, AugmentOptions(**job))
    assert rest.augmentations_added == N_M - committed  # nothing done twice, nothing lost
    assert_exactly_n_m(ws.path)
