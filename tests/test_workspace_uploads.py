"""Issue 16, item 5: the upload quota holds under concurrent uploads, from threads and from processes.

Checking the quota and starting the extraction are one reservation under the uploads folder's lock, counting the
uploads being extracted; the reservation of a process that died counts for nothing and is removed. The usage line
shows sizes people can read (a 5 MB quota is "5.0 MB", not "0.0 GB").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MB = 1000**2


def make_zip(path: Path, megabytes: float, seed: int) -> Path:
    """A zip of class folders holding `megabytes` of incompressible files (stored: no bomb-like ratio)."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        remaining = int(megabytes * MB)
        i = 0
        while remaining > 0:
            n = min(remaining, 250_000)
            zf.writestr(f"data/class{i % 2}/{i}.png", rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            remaining -= n
            i += 1
    return path


def kept_bytes(workspace: Path) -> int:
    from diffusemix_core.workspace.uploads import Uploads

    return Uploads(workspace).usage()


def leftovers(workspace: Path) -> list[str]:
    folder = workspace / "datasets"
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-")) if folder.is_dir() else []


def test_concurrent_uploads_from_threads_never_overrun_the_quota(tmp_path):
    from diffusemix_core.errors import WorkspaceError
    from diffusemix_core.workspace.uploads import Uploads

    sizes = [2.0, 3.0, 4.0, 2.5]
    archives = [make_zip(tmp_path / f"set{i}.zip", mb, seed=i) for i, mb in enumerate(sizes)]
    workspace = tmp_path / "ws"
    quota = 5 * MB
    barrier = threading.Barrier(len(archives))
    results: dict[int, object] = {}

    def upload(i: int) -> None:
        uploads = Uploads(workspace, quota_bytes=quota)  # one per request, as the app's handlers do
        barrier.wait()
        try:
            results[i] = uploads.add(archives[i])
        except WorkspaceError as exc:
            results[i] = exc

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(archives))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    kept = [r for r in results.values() if not isinstance(r, Exception)]
    refused = [r for r in results.values() if isinstance(r, Exception)]
    assert len(results) == len(archives)
    assert kept and refused
    assert kept_bytes(workspace) <= quota
    assert kept_bytes(workspace) == sum(d.bytes for d in kept)
    for exc in refused:
        assert "over the quota of 5.0 MB" in str(exc) and "delete datasets" in str(exc), exc
    assert leftovers(workspace) == []


UPLOAD_SCRIPT = """
import sys, time
from pathlib import Path
from diffusemix_core.errors import WorkspaceError
from diffusemix_core.workspace.uploads import Uploads
workspace, archive, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
uploads = Uploads(workspace, quota_bytes=int(sys.argv[4]))
while not go.exists():
    time.sleep(0.001)
try:
    print("kept", uploads.add(archive).bytes)
except WorkspaceError as exc:
    print("refused", exc)
"""


def test_concurrent_uploads_from_processes_never_overrun_the_quota(tmp_path):
    sizes = [2.0, 3.0, 4.0, 2.5]
    archives = [make_zip(tmp_path / f"set{i}.zip", mb, seed=10 + i) for i, mb in enumerate(sizes)]
    workspace = tmp_path / "ws"
    go = tmp_path / "go"
    quota = 5 * MB
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", UPLOAD_SCRIPT, str(workspace), str(a), str(go), str(quota)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for a in archives]
    time.sleep(2.0)  # every process imported and waiting
    go.touch()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(procs), outputs
    lines = [out.strip() for out, _ in outputs]
    kept = [line for line in lines if line.startswith("kept")]
    refused = [line for line in lines if line.startswith("refused")]
    assert kept and refused and len(kept) + len(refused) == len(archives), lines
    assert kept_bytes(workspace) <= quota
    assert all("over the quota of 5.0 MB" in line for line in refused), refused
    assert leftovers(workspace) == []


def test_a_dead_processes_reservation_does_not_stay_behind(tmp_path):
    from diffusemix_core.workspace.uploads import RESERVED_NAME, Uploads

    proc = subprocess.Popen(["true"])
    proc.wait()
    stale = tmp_path / "ws" / "datasets" / f".tmp-{proc.pid}-0123456789ab"
    stale.mkdir(parents=True)
    (stale / RESERVED_NAME).write_text(json.dumps({"bytes": 4 * MB, "name": "killed.zip"}))
    (stale / "data").mkdir()
    uploads = Uploads(tmp_path / "ws", quota_bytes=5 * MB)
    assert uploads.reserved() == 0  # its writer is gone: it reserves nothing
    dataset = uploads.add(make_zip(tmp_path / "a.zip", 3.0, seed=3))  # 3 + 4 > 5 if it still counted
    assert dataset.bytes == 3 * MB
    assert not stale.exists() and leftovers(tmp_path / "ws") == []
    live = tmp_path / "ws" / "datasets" / f".tmp-{os.getpid()}-ba9876543210"  # an upload still at work
    live.mkdir()
    (live / RESERVED_NAME).write_text(json.dumps({"bytes": int(1.5 * MB), "name": "busy.zip"}))
    assert uploads.reserved() == int(1.5 * MB)
    with pytest.raises(Exception, match=r"\(1\.5 MB of it being uploaded now\), over the quota of 5\.0 MB"):
        uploads.add(make_zip(tmp_path / "b.zip", 1.0, seed=4))
    assert live.exists()


def test_the_usage_line_shows_sizes_people_can_read(tmp_path):
    from diffusemix_core.checks import format_size
    from diffusemix_core.workspace.uploads import Uploads

    uploads = Uploads(tmp_path / "ws", quota_bytes=5 * MB)
    assert uploads.usage_line() == "0 uploaded dataset(s), 0 B of 5.0 MB."
    uploads.add(make_zip(tmp_path / "a.zip", 1.2, seed=5))
    assert uploads.usage_line() == "1 uploaded dataset(s), 1.2 MB of 5.0 MB."
    assert Uploads(tmp_path / "ws").usage_line() == "1 uploaded dataset(s), 1.2 MB."
    assert [format_size(n) for n in (0, 999, 1000, 5 * MB, 999_999, 3 * 1000**3, 12 * 1000**4)] == [
        "0 B", "999 B", "1.0 KB", "5.0 MB", "1.0 MB", "3.0 GB", "12.0 TB"]
