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

from diffusemix_core.bulk.ray_cluster import DRIVERS, session_processes
from test_cli_workspace import ROOT, TINY, assert_exactly_once, cli_env, make_dataset, rows
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
