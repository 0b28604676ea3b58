"""A private Ray does not outlive its driver (issue 16, item 3): `augment --engine ray` without a cluster starts a Ray
on this machine; when that driver is SIGKILLed, Ray's dashboard and runtime-env agents used to keep running. The next
run ends them and says so; a run that ends normally leaves no process of its Ray behind.

No in-process Ray here: every driver is a CLI process with its own private Ray (of this machine's CPUs).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from diffusemix_core.bulk.ray_cluster import DRIVERS, _start_time, end_leftover_local_rays, session_processes
from helpers import ROOT, TINY, cli_env
from test_cli_workspace import assert_exactly_once, make_dataset, rows
from test_ray import _ray

pytestmark = pytest.mark.timeout(900)

PER_IMAGE = 2


def private_ray_env() -> dict:
    env = cli_env()
    env.pop("RAY_ADDRESS", None)  # no cluster given: the command starts its own Ray
    return env


def test_a_killed_drivers_private_ray_is_ended_by_the_next_run_and_a_finished_run_leaves_none(tmp_path):
    _ray()
    train = tmp_path / "data" / "train"
    info = make_dataset(train)
    ws = tmp_path / "ws"
    command = [sys.executable, "-m", "diffusemix_core", "-v", "augment", "--train-dir", str(train), "--workspace",
               str(ws), "--per-image", str(PER_IMAGE), "--batch-size", "1", "--seed", "3", "--fractal-dir",
               str(train.parent / "fractals"), "--no-progress", *TINY, "--engine", "ray", "--workers", "1"]
    proc = subprocess.Popen(command, env=private_ray_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    record = Path(tempfile.gettempdir()) / DRIVERS / str(proc.pid)
    killed_at = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:  # the driver's private Ray is up, and it has committed something: kill it mid-run
                if record.exists() and rows(ws, "SELECT count(*) FROM augmentations")[0][0]:
                    session = json.loads(record.read_text())["session_dir"]
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_at = time.monotonic()
                    break
            except (sqlite3.OperationalError, json.JSONDecodeError):  # not created or written yet
                pass
            time.sleep(0.05)
    finally:
        if killed_at is None and proc.poll() is None:
            proc.kill()
        stderr = proc.communicate()[1].decode(errors="replace")
    assert killed_at is not None, f"the run finished (or never started) before it could be killed: {stderr[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    leftovers = session_processes(session)
    assert leftovers, "nothing of the killed driver's Ray was left to end"  # what the issue saw: agents outlive it

    again = subprocess.run(command, env=private_ray_env(), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(rf"ended \d+ process\(es\) of the private Ray that a killed run \(pid {proc.pid}\) left behind "
                     rf"\({re.escape(session)}\)", again.stderr), again.stderr[-3000:]
    assert session_processes(session) == [] and not record.exists()  # none of it is left
    assert_exactly_once(ws, info)  # and the killed run was resumed

    # the second run's own Ray ended with it (Ray's shutdown at exit), and it forgot its record
    started = re.search(r"started a private Ray on this machine \((\S+)\)", again.stderr)
    assert started, again.stderr[-3000:]
    deadline = time.monotonic() + 30
    while session_processes(started.group(1)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert session_processes(started.group(1)) == []
    assert not [r for r in (Path(tempfile.gettempdir()) / DRIVERS).glob("*") if started.group(1) in r.read_text()]


# the records, without Ray ---------------------------------------------------------------------------------------
def _record(folder: Path, name: str, **info) -> None:
    (folder / DRIVERS).mkdir(mode=0o700, exist_ok=True)
    (folder / DRIVERS / name).write_text(json.dumps(info))


def test_only_the_processes_of_a_dead_drivers_recorded_session_are_ended(tmp_path, monkeypatch):
    """A process holding a file of a dead driver's session is ended; a live driver's session, a record naming a
    folder that is not a Ray session (`/`, a planted record) and other processes are left alone."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / "ray" / "session_2026-12-05_09-00-00_000001_11"
    live = tmp_path / "ray" / "session_2026-12-05_09-00-00_000002_22"
    holders = {}
    for session in (dead, live):
        (session / "logs").mkdir(parents=True)
        holders[session] = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'a'); "
                                             "time.sleep(300)", str(session / "logs" / "agent.log")])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(session_processes(str(s)) for s in holders):
            time.sleep(0.1)
        _record(tmp_path, "1", pid=2**22 + 1, started=12345, session_dir=str(dead))  # no such process
        _record(tmp_path, "2", pid=os.getpid(), started=_start_time(os.getpid()), session_dir=str(live))
        _record(tmp_path, "3", pid=2**22 + 2, started=1, session_dir="/")
        _record(tmp_path, "4", pid=2**22 + 3, started=1, session_dir=str(tmp_path))

        assert end_leftover_local_rays() == 1
        assert holders[dead].wait(timeout=10) == -signal.SIGTERM
        assert holders[live].poll() is None and bystander.poll() is None
        assert sorted(p.name for p in (tmp_path / DRIVERS).iterdir()) == ["2", "3", "4"]  # the dead one is done
    finally:
        for proc in (*holders.values(), bystander):
            proc.kill()
            proc.wait()


def test_a_records_folder_others_may_write_in_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    session = tmp_path / "ray" / "session_2026-12-05_09-00-00_000003_33"
    (session / "logs").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'a'); time.sleep(300)",
                               str(session / "logs" / "agent.log")])
    try:
        _record(tmp_path, "1", pid=2**22 + 1, started=1, session_dir=str(session))
        (tmp_path / DRIVERS).chmod(0o777)
        assert end_leftover_local_rays() == 0 and holder.poll() is None
    finally:
        holder.kill()
        holder.wait()
