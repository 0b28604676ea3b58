"""What many test files share, in one version: the command line run as a user runs it (a subprocess, offline, on
this checkout's code) or in-process, killing a process at a chosen moment, counting a manifest's rows while another
process writes it, and the tiny CLIP scorer saved as a folder.

Import it as ``from helpers import ...`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

ROOT = Path(__file__).resolve().parents[1]
# the untrained miniature model at its smallest useful size: every command that generates runs in seconds
TINY = ["--model", "tiny-random", "--resolution", "64", "--steps", "2"]

T = TypeVar("T")


def cli_env(**changes: str | None) -> dict[str, str]:
    """The environment of a CLI subprocess: offline, this checkout's package first on the path, one OpenMP thread,
    unbuffered output. ``changes`` set variables (``HF_HOME="..."``) or remove them (``OMP_NUM_THREADS=None``)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def cli_command(*args) -> list[str]:
    """``python -m diffusemix_core ARGS`` with this interpreter."""
    return [sys.executable, "-m", "diffusemix_core", *map(str, args)]


def run_cli(*args, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run one command to its end, as a user does: text output captured, from the repository root."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, env=env or cli_env(), cwd=ROOT,
                          timeout=timeout)


def start_cli(*args, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """Start one command and return at once (output discarded unless ``stdout=``/``stderr=`` say otherwise)."""
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    return subprocess.Popen(cli_command(*args), env=env or cli_env(), cwd=ROOT, **popen)


def run_main(*args) -> tuple[int, str, str]:
    """Run one command in this process (``cli.main``): (exit status, stdout, stderr)."""
    from diffusemix_core.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def error_line(stderr: str) -> str:
    """The one line a failing command may print: 'error: ...', and nothing else, above all no traceback."""
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def kill_when(proc: subprocess.Popen, ready: Callable[[], T], *, timeout: float = 240, every: float = 0.02) -> T:
    """SIGKILL `proc` as soon as ``ready()`` gives something (a row count, a file), and return it.

    The test fails when the process ends first or nothing came within `timeout` seconds: then the moment the test
    wanted to reach was never reached.
    """
    found = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            found = ready()
            if found:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(every)
    finally:
        if proc.poll() is None and not found:
            proc.kill()
        proc.wait()
    if not found:
        said = proc.stderr.read() if proc.stderr is not None else ""
        said = said.decode(errors="replace") if isinstance(said, bytes) else said
        raise AssertionError(f"the process ended (status {proc.returncode}) or never got there before it could be "
                             f"killed: {said[-2000:]}")
    assert proc.returncode == -signal.SIGKILL
    return found


def manifest_count(ws: Path, table: str = "augmentations") -> int:
    """The rows of a manifest table now, read while another process may write it; 0 while the manifest or its
    schema does not exist yet (the file is opened read-only, so reading never creates it)."""
    path = Path(ws) / "manifest.sqlite"
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # schema not created yet, or the file not yet a database
        return 0


def save_tiny_clip(folder: Path) -> Path:
    """The untrained tiny CLIP scorer written the way a downloaded snapshot is laid out (model, tokenizer and image
    processor, ``save_pretrained`` of each): a scorer given by folder."""
    from diffusemix_core.engine.test_models import build_tiny_random_clip

    for part in build_tiny_random_clip():
        part.save_pretrained(folder)
    return folder
