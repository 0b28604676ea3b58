"""The Ray engine (``--engine ray``, ``bulk/ray_runner.py``) on a local Ray: the local engine's manifest and bytes, a
worker killed mid-run, a driver killed mid-run, cancel, a worker's error in one line, and ray as an optional dependency.

One local Ray (2 CPUs, a small object store) serves the module; the two generate actors take half a CPU each, so
load and compose tasks still have a CPU. The dataset is test_cli_workspace's messy one (awkward modes, bad files).
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.bulk.options import AugmentOptions
from diffusemix_core.bulk.plan import Planner
from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.bulk.stages import Commit
from diffusemix_core.errors import ModelUnavailableError
from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.generation import GenerationSettings
from diffusemix_core.engine.pix2pix import Pix2PixGenerator
from diffusemix_core.workspace.folder import Workspace
from helpers import ROOT, cli_env, kill_when, manifest_count, run_cli, start_cli
from test_cli_workspace import BATCH, PER_IMAGE, assert_exactly_once, augment_args, choices_by_slot, make_dataset, rows

SEED = 3  # test_cli_workspace.augment_args' seed
SETTINGS = GenerationSettings(model="tiny-random", resolution=64, steps=2)  # what TINY gives on the command line
RAY = {"runner": "ray", "workers": 2, "cpus_per_worker": 0.5}
RAY_FLAGS = ["--engine", "ray", "--workers", "2", "--cpus-per-worker", "0.5"]


def _ray():
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("ray is not installed; CI runs the Ray engine's tests (pip install -r requirements-ray.txt)")
        pytest.skip("ray is not installed: pip install -r requirements-ray.txt")
    return ray


@pytest.fixture(scope="module")
def cluster():
    """A local Ray for the module; yields its address, for drivers in other processes."""
    ray = _ray()
    context = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
                       logging_level="warning")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the generator factories below
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    train = tmp_path_factory.mktemp("data") / "train"
    return train, make_dataset(train)


def job(train: Path, **options) -> dict:
    """The run of test_cli_workspace.augment_args (with `options` changed), as run_augment arguments."""
    options = {"per_image": PER_IMAGE, "batch_size": BATCH, "seed": SEED, "settings": SETTINGS, **options}
    return {"options": AugmentOptions(**options), "fractals": FractalLibrary.from_folder(train.parent / "fractals")}


@pytest.fixture(scope="module")
def local_ws(dataset, tmp_path_factory) -> Path:
    """The reference: the same job on the local engine.

    On the CPU the last bits of Î depend on torch's thread count. A half-CPU actor computes with one thread (Ray sets
    OMP_NUM_THREADS from the CPUs an actor reserves); the local engine gives torch its share of the cores less one
    (cpu_share.py), which is one thread on two cores: the reference runs on two cores, whatever the machine has."""
    train, _ = dataset
    ws = Workspace(tmp_path_factory.mktemp("local") / "ws")
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(cores)[:2])
    try:
        run_augment(ws, train, **job(train))
    finally:
        os.sched_setaffinity(0, cores)
    return ws.path


def snapshot(ws: Path) -> dict:
    """Every row of sources, generations and augmentations (less timestamps and run ids) and every stored file."""
    out: dict = {}
    with sqlite3.connect(ws / "manifest.sqlite") as conn:
        for table in ("sources", "generations", "augmentations"):
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")
                       if r[1] not in ("created_at", "run_id", "reviewed_at")]
            out[table] = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id").fetchall()
    conn.close()
    out["files"] = {p.relative_to(ws).as_posix(): p.read_bytes() for p in sorted((ws / "images").rglob("*.png"))}
    return out


# the same result ---------------------------------------------------------------------------------------------
def test_ray_engine_writes_the_local_engines_manifest_and_bytes(cluster, dataset, local_ws, tmp_path):
    """Same workspace, data and flags: every row (ids included: batches are committed in plan order) and every
    image byte equal the local engine's; progress is reported after every commit, as by the local engine."""
    train, info = dataset
    ws = Workspace(tmp_path / "ws")
    seen = []
    summary = run_augment(ws, train, **job(train, **RAY), progress=lambda p: seen.append((p.done, p.total)))
    assert (summary.augmentations_added, summary.images_failed) == (len(info["good"]) * PER_IMAGE, len(info["bad"]))
    assert summary.model_seconds > 0 and summary.load_seconds > 0  # measured in the actors, reported here
    assert seen[0] == (0, seen[0][1]) and seen[-1][0] == seen[-1][1] and seen == sorted(seen) and len(seen) > 2
    assert snapshot(ws.path) == snapshot(local_ws)
    assert_exactly_once(ws.path, info)
    engine = json.loads(rows(ws.path, "SELECT args FROM runs")[0][0])["engine"]
    assert engine == {"name": "ray", "address": None, "workers": 2, "gpus_per_worker": 0.0, "cpus_per_worker": 0.5,
                      "stage_cpus": 1.0}


# faults ------------------------------------------------------------------------------------------------------
class DiesOnce:
    """The tiny model, whose worker process exits (as if killed) in the third generate call of the run, once.

    A test-only generator: it reaches the workers through run_augment's generator_factory hook."""

    def __init__(self, settings: GenerationSettings, folder: Path) -> None:
        self.inner, self.folder = Pix2PixGenerator(settings), folder

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, requests, **kwargs):
        calls = self.folder / "calls"
        with open(calls, "a") as f:
            f.write(f"{os.getpid()}\n")
        if len(calls.read_text().split()) >= 3 and not (self.folder / "died").exists():
            (self.folder / "died").write_text(str(os.getpid()))
            os._exit(1)
        return self.inner.generate(requests, **kwargs)


def test_a_worker_killed_mid_run_is_restarted_and_its_batch_retried(cluster, dataset, local_ws, tmp_path):
    train, info = dataset
    ws = Workspace(tmp_path / "ws")
    marks = tmp_path / "marks"
    marks.mkdir()
    summary = run_augment(ws, train, **job(train, **RAY),
                          generator_factory=functools.partial(DiesOnce, SETTINGS, marks))
    assert (marks / "died").exists()  # a generate actor's process died in the middle of a batch...
    died = int((marks / "died").read_text())
    pids = (marks / "calls").read_text().split()
    assert len(set(pids)) == 3 and pids[-1] != str(died)  # ...was restarted (a new process), and the run went on
    assert summary.augmentations_added == len(info["good"]) * PER_IMAGE
    assert_exactly_once(ws.path, info)
    assert snapshot(ws.path) == snapshot(local_ws)  # the retried batch made the very same images


def test_a_killed_driver_is_resumed_by_the_same_command(cluster, dataset, local_ws, tmp_path):
    """The CLI driver is SIGKILLed after its first commit; the same command finishes the job exactly once, and the
    dead driver's journalled files are cleaned up (no orphan, no pending journal entry)."""
    train, info = dataset
    ws = tmp_path / "ws"
    flags = augment_args(train, ws, *RAY_FLAGS, "--address", cluster)
    count_at_kill = kill_when(start_cli(*flags, stderr=subprocess.PIPE), lambda: manifest_count(ws), timeout=120)
    assert 0 < count_at_kill < len(info["good"]) * PER_IMAGE

    again = run_cli(*flags, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    assert_exactly_once(ws, info)
    assert choices_by_slot(ws) == choices_by_slot(local_ws)
    assert snapshot(ws)["files"] == snapshot(local_ws)["files"]


def test_cancel_stops_planning_and_the_same_run_finishes_the_job(cluster, dataset, tmp_path, monkeypatch):
    """The local engine's cancel Event and progress callback: after a cancel no batch is planned, what was handed
    to the workers is committed, and the next run completes exactly once. Never more than 4 x workers + 2 batches
    are planned and not yet committed (what keeps memory bounded for a dataset of millions)."""
    train, info = dataset
    ws = Workspace(tmp_path / "ws")
    cancel = threading.Event()
    planned, committed, outstanding = [0], [0], []
    plan_source, commit = Planner.plan_source, Commit.__call__

    def counting_plan(self, *args):
        planned[0] += 1
        return plan_source(self, *args)

    def counting_commit(self, batch):
        committed[0] += 1
        outstanding.append(planned[0] - committed[0] + 1)
        return commit(self, batch)

    monkeypatch.setattr(Planner, "plan_source", counting_plan)
    monkeypatch.setattr(Commit, "__call__", counting_commit)
    small_batches = job(train, **RAY, batch_size=1)  # 16 batches: more than the engine keeps in flight (10)
    first = run_augment(ws, train, **small_batches, cancel=cancel,
                        progress=lambda p: cancel.set() if p.done >= 1 else None)
    assert max(outstanding) <= 4 * RAY["workers"] + 2 + 1  # + the one the planner holds while it waits
    assert first.cancelled
    assert 0 < first.augmentations_added < len(info["good"]) * PER_IMAGE
    rest = run_augment(ws, train, **small_batches)
    assert not rest.cancelled and rest.augmentations_added + first.augmentations_added == len(info["good"]) * PER_IMAGE
    assert_exactly_once(ws.path, info)


def test_a_workers_error_is_the_projects_one_line_error(cluster, dataset, tmp_path):
    train, _ = dataset
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelUnavailableError) as raised:
        run_augment(Workspace(tmp_path / "ws"), train, **job(train, settings=GenerationSettings(
            model=str(missing), resolution=64, steps=2), runner="ray", workers=1, cpus_per_worker=0.5))
    assert str(missing) in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("address, says", [
    ("127.0.0.1:1", "cannot reach the Ray cluster at '127.0.0.1:1'"),  # in seconds, not after ray.init's retries
    ("ray://127.0.0.1:1", "the Ray engine cannot run through a Ray Client connection"),  # Ray Data cannot stream
])
def test_an_unusable_address_is_one_line(dataset, tmp_path, address, says):
    _ray()
    train, _ = dataset
    result = subprocess.run([sys.executable, "-m", "diffusemix_core",
                             *augment_args(train, tmp_path / "ws", "--engine", "ray", "--address", address)],
                            env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {says}"), result.stderr


# ray is optional -------------------------------------------------------------------------------------------
def test_without_ray_the_ray_engine_says_how_to_install_it_in_one_sentence(dataset, tmp_path):
    train, _ = dataset
    code = ("import sys; sys.modules['ray'] = None; from diffusemix_core.cli.main import main; "
            "sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, *augment_args(train, tmp_path / "ws", "--engine", "ray")],
                            env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -r requirements-ray.txt" in lines[0], result.stderr
    assert lines[0].count(". ") == 0 and not (tmp_path / "ws").exists()  # one sentence; nothing created


def test_the_local_engine_never_imports_ray(tmp_path):
    train = tmp_path / "train"
    (train / "cls").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8)).save(train / "cls" / f"{i}.png")
    FractalLibrary.procedural(2, seed=0, size=32).save(tmp_path / "fractals")
    code = ("import sys; from diffusemix_core.cli.main import main; status = main(sys.argv[1:]); "
            "print('ray imported' if 'ray' in sys.modules else 'ray not imported'); sys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, *augment_args(train, tmp_path / "ws")], env=cli_env(),
                            cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "ray not imported" in result.stdout
    assert rows(tmp_path / "ws", "SELECT count(*) FROM augmentations") == [(2 * PER_IMAGE,)]


def test_the_ray_engine_scores_like_the_score_command(cluster, dataset, local_ws, tmp_path):
    """With a scorer, the cluster runs the scores stage after compose (CPU actors): every generation and
    augmentation gets its label scores and flags, equal to what `score` computes for the local engine's workspace."""
    import shutil

    from diffusemix_core.curation.score_workspace import score_workspace

    train, info = dataset
    ws = Workspace(tmp_path / "ws")
    summary = run_augment(ws, train, **job(train, **RAY, scorer="tiny-random-clip"))
    assert summary.scorer == "tiny-random-clip"
    reference = tmp_path / "reference"
    shutil.copytree(local_ws, reference)
    score_workspace(Workspace(reference), "tiny-random-clip")

    def scores(path):
        # the probe is trained by `score` over the whole set (curation/probe.py), not by a run's scores stage
        return rows(path, "SELECT s.target, s.target_id, c.model, s.metric, s.value, s.text FROM scores s "
                          "JOIN scorers c ON c.id = s.scorer_id WHERE s.metric NOT LIKE 'probe%' ORDER BY 1, 2, 3, 4")

    ours, theirs = scores(ws.path), scores(reference)
    n = len(info["good"]) * PER_IMAGE
    assert len({(t, i) for t, i, *_ in ours if t == "augmentation"}) == n  # every augmentation is scored
    assert [r[:4] for r in ours] == [r[:4] for r in theirs]
    for a, b in zip(ours, theirs):
        assert a[5] == b[5] and (a[4] is None and b[4] is None or abs(a[4] - b[4]) < 1e-4), (a, b)


def test_the_apps_dataset_tab_submits_to_the_ray_address_it_was_started_with(cluster, dataset, tmp_path):
    """`python app.py --ray-address A`: the Dataset tab's run goes to that cluster, with the same progress, summary
    and resume as a local run (driven through gradio_client, as a user's browser would)."""
    import zipfile

    from gradio_client import Client, handle_file

    from diffusemix_core.ui import AppConfig, build_app, launch_kwargs

    train, info = dataset
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(train.rglob("*")):
            if path.is_file():
                zf.write(path, f"train/{path.relative_to(train).as_posix()}")
    config = AppConfig(model="tiny-random", workspace=tmp_path / "ws", resolution=64, steps=2, device="cpu",
                       ray_address=cluster)
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    try:
        client = Client(url, verbose=False)
        handle, _ = client.predict(handle_file(str(archive)), api_name="/extract_zip")
        text, summary = client.predict(handle, PER_IMAGE, SEED, 0.2, 2, 64, BATCH, False, api_name="/run_dataset")
        assert text.startswith("✅"), text
        assert summary["augmentations_added"] == len(info["good"]) * PER_IMAGE
        again = client.predict(handle, PER_IMAGE, SEED, 0.2, 2, 64, BATCH, False, api_name="/run_dataset")[1]
        assert again["augmentations_added"] == 0  # resumed: nothing done twice
    finally:
        demo.close()
    args = [json.loads(a) for (a,) in rows(tmp_path / "ws", "SELECT args FROM runs ORDER BY id")]
    assert all(a["engine"]["name"] == "ray" for a in args) and len(args) == 2
    assert rows(tmp_path / "ws", "SELECT count(*) FROM augmentations") == [(len(info["good"]) * PER_IMAGE,)]
