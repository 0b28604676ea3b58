"""Issue 16, item 3 ("advice that loses data"), driven the way it was found: the CLI in subprocesses, a kill, a
second writer, a full disk.

* a full disk after a committed decision is said as such ("free some space first"), never as a damaged manifest whose
  backup should be copied over it; once space is freed the decision is there;
* ``check --restore`` beside stale ``-wal``/``-shm`` files gives exactly the backup's content (copying by hand
  would replay the stale log onto it);
* a backup's temp files left by a killed writer (``.tmp-<pid>-<hex>.sqlite-journal``) are reported by ``check``
  and removed by ``check --fix``;
* clean-up spares a file a live writer has journalled, even when a dead writer journalled it too;
* an export that fails or is killed half-way leaves no partial folder: the rerun needs no ``--overwrite``.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_safety_workspace import (ROOT, _big_approved_workspace, augment_args, cli, cli_env, dead_pid,  # noqa: F401
                                   error_line, made, png_bytes, query, start_cli, store_name, write_train, ws)


def dump(path: Path) -> list[str]:
    """Every row and every schema statement of a SQLite file, read-only (nothing replayed into it)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------ a full disk
@pytest.fixture
def small_disk(tmp_path, made):
    """A tmpfs a few MB larger than the made workspace (root mounts it; elsewhere the test is skipped)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk needs a small file system: run as root to mount a tmpfs")
    size = sum(p.stat().st_size for p in made[1].rglob("*") if p.is_file())
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size + 6 * 1024**2}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write a file into `folder` until the disk is full; returns it."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_after_a_decision_says_free_space_and_the_decision_survives(made, small_disk, tmp_path):
    ws = small_disk / "ws"
    shutil.copytree(made[1], ws, symlinks=True)
    decided = cli("review", "--workspace", ws, "--approve", "--label", "cat")
    assert decided.returncode == 0, decided.stderr
    filler = fill(small_disk)

    commands = {
        "status": ["status", "--workspace", ws],
        "review": ["review", "--workspace", ws, "--reject", "--label", "dog"],
        "check": ["check", "--workspace", ws],
        "restore": ["check", "--workspace", ws, "--restore"],
        "export": ["export", "--workspace", ws, "--to", tmp_path / "out"],
    }
    for name, args in commands.items():
        result = cli(*args)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        line = error_line(result)
        assert "full" in line and "free some space first" in line, (name, line)
        assert "--restore" not in line and "cp " not in line and "damaged" not in line, (name, line)
        assert not list((ws / "backups").glob("damaged-*")), name  # the restore did not run
    filler.unlink()  # the user frees space, as advised
    status = cli("status", "--workspace", ws, "--json")
    assert status.returncode == 0, status.stderr
    assert query(ws, "SELECT DISTINCT status FROM augmentations WHERE label = 'cat'") == [("approved",)]
    assert query(ws, "SELECT DISTINCT status FROM augmentations WHERE label = 'dog'") == [("pending",)]
    assert cli("check", "--workspace", ws).returncode == 0


def test_the_full_disk_rule_on_the_errors_sqlite_gives(tmp_path, monkeypatch):
    """SQLITE_FULL and ENOSPC are a full disk on their own; an I/O error only when the disk has no room left."""
    from diffusemix_core.workspace import health

    full = sqlite3.OperationalError("database or disk is full")
    io_error = sqlite3.OperationalError("disk I/O error")
    damaged = sqlite3.DatabaseError("file is not a database")
    assert health.is_disk_full(full, tmp_path)
    assert health.is_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert not health.is_disk_full(io_error, tmp_path)  # this disk has room
    assert not health.is_disk_full(damaged, tmp_path)
    monkeypatch.setattr(health, "free_bytes", lambda folder: 4096)
    assert health.is_disk_full(io_error, tmp_path)
    assert not health.is_disk_full(damaged, tmp_path)  # a damaged file stays a damaged file
    message = str(health.disk_full_error(tmp_path, io_error))
    assert str(tmp_path) in message and "free some space first" in message and "4.1 KB free" in message


# ------------------------------------------------------------------------------------------------ restore
def _stale_log(ws: Path, keep: Path) -> None:
    """Commit changes that stay in the manifest's -wal, copy the -wal and -shm to `keep`, then close."""
    conn = sqlite3.connect(ws / "manifest.sqlite")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("UPDATE augmentations SET status = 'rejected', drift = 0.5")
    conn.execute("DELETE FROM reviews")
    conn.commit()
    keep.mkdir()
    for suffix in ("-wal", "-shm"):
        shutil.copy(ws / f"manifest.sqlite{suffix}", keep / f"manifest.sqlite{suffix}")
    conn.close()


def _damage(ws: Path) -> None:
    """Overwrite one index page the stale log does not hold: the file opens, its integrity check fails."""
    conn = sqlite3.connect(ws / "manifest.sqlite")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'idx_sources_label'").fetchone()[0]
    conn.close()
    with open(ws / "manifest.sqlite", "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\x0d" + bytes(range(256)) * (page_size // 256 - 1))


def test_check_restore_beside_stale_wal_and_shm_gives_exactly_the_backup(ws, tmp_path):
    assert cli("review", "--workspace", ws, "--approve", "--label", "cat").returncode == 0
    backup = sorted((ws / "backups").glob("manifest-*.sqlite"))[-1]
    expected = dump(backup)
    _stale_log(ws, tmp_path / "stale")
    _damage(ws)
    for suffix in ("-wal", "-shm"):  # the stale log lies beside the damaged manifest
        shutil.copy(tmp_path / "stale" / f"manifest.sqlite{suffix}", ws / f"manifest.sqlite{suffix}")

    # what copying the backup by hand does: the stale log is replayed onto it
    by_hand = tmp_path / "by-hand"
    shutil.copytree(ws, by_hand)
    shutil.copy(backup, by_hand / "manifest.sqlite")
    sqlite3.connect(by_hand / "manifest.sqlite").close()  # the next command opens it
    assert dump(by_hand / "manifest.sqlite") != expected

    damaged = cli("check", "--workspace", ws)
    assert damaged.returncode == 1 and "manifest: DAMAGED" in damaged.stdout
    restored = cli("check", "--workspace", ws, "--restore")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"restored {backup.name}" in restored.stdout and "manifest: ok" in restored.stdout
    assert dump(ws / "manifest.sqlite") == expected
    aside = list((ws / "backups").glob("damaged-*"))
    assert len(aside) == 1
    assert sorted(p.name for p in aside[0].iterdir()) == ["manifest.sqlite", "manifest.sqlite-shm",
                                                         "manifest.sqlite-wal"]  # set aside, not deleted
    assert cli("status", "--workspace", ws).returncode == 0
    assert dump(ws / "manifest.sqlite") == expected  # and stays so when used

    again = cli("check", "--workspace", ws, "--restore")  # a sound manifest is never replaced
    assert again.returncode == 1
    line = error_line(again)
    assert "is sound" in line and str(ws / "manifest.sqlite") in line
    assert dump(ws / "manifest.sqlite") == expected


# ------------------------------------------------------------------------------------------------ backup temps
def test_a_backups_temp_files_left_by_a_killed_writer_are_reported_and_fixed(ws):
    dead = dead_pid()
    left = [ws / "backups" / f".tmp-{dead}-0123456789ab.sqlite",
            ws / "backups" / f".tmp-{dead}-0123456789ab.sqlite-journal"]
    live = ws / "backups" / f".tmp-{os.getpid()}-ba9876543210.sqlite-journal"  # a writer still at work
    for path in [*left, live]:
        path.write_bytes(b"partial")
    report = cli("check", "--workspace", ws)
    assert report.returncode == 1
    assert "2 temp file(s) of dead writers" in report.stdout
    assert all(path.exists() for path in [*left, live])  # the report removes nothing
    fixed = cli("check", "--workspace", ws, "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "removed 2 file(s)" in fixed.stdout
    assert not any(path.exists() for path in left) and live.exists()


# ------------------------------------------------------------------------------------------------ gc race
def test_clean_up_spares_a_file_a_live_writer_journalled_after_a_dead_one(ws, tmp_path):
    """Writer A journals and writes X, then is killed; live writer B journals the same X (content-addressed) and
    skips writing it because it is there; a new bulk run's clean-up must keep X for B."""
    from diffusemix_core.workspace.manifest import Manifest
    from diffusemix_core.workspace.store import ImageStore

    data = png_bytes(11)
    x = store_name(data)
    writer_a = subprocess.run(
        [sys.executable, "-c",
         "import os, signal, sys\n"
         "from pathlib import Path\n"
         "from diffusemix_core.workspace.manifest import Manifest\n"
         "from diffusemix_core.workspace.store import ImageStore\n"
         "ws, rel = Path(sys.argv[1]), sys.argv[2]\n"
         "Manifest(ws / 'manifest.sqlite').journal([rel])\n"
         "ImageStore(ws).put_encoded(rel, sys.stdin.buffer.read())\n"
         "os.kill(os.getpid(), signal.SIGKILL)\n", str(ws), x],
        input=data, capture_output=True, env=cli_env(), cwd=ROOT, timeout=120)
    assert writer_a.returncode == -signal.SIGKILL, writer_a.stderr
    assert (ws / x).read_bytes() == data
    written = (ws / x).stat().st_mtime_ns

    Manifest(ws / "manifest.sqlite").journal([x])  # writer B: this test process, alive
    ImageStore(ws).put_encoded(x, data)
    assert (ws / x).stat().st_mtime_ns == written  # B skipped the write: X was there

    other = write_train(tmp_path / "other", classes=("bird",), per_class=1, seed=5)
    run = cli(*augment_args(other, ws))  # its clean-up removes what dead writers left
    assert run.returncode == 0, run.stderr
    assert (ws / x).read_bytes() == data, "clean-up removed a file a live writer is about to commit"
    assert query(ws, "SELECT pid FROM pending_files WHERE path = ?", [x]) == [(os.getpid(),)]  # only A forgotten
    report = cli("check", "--workspace", ws)
    assert report.returncode == 0 and "0 orphan(s)" in report.stdout  # B's pending file is no orphan


# ------------------------------------------------------------------------------------------------ export
def test_a_failed_export_leaves_no_folder_and_the_rerun_needs_no_overwrite(ws, tmp_path, monkeypatch, capsys):
    from diffusemix_core.cli.main import main
    from diffusemix_core.workspace import export

    assert cli("review", "--workspace", ws, "--approve").returncode == 0
    out = tmp_path / "exports" / "approved"
    real = export.final_image
    calls = []
    lock = threading.Lock()

    def failing(store, row):
        with lock:
            calls.append(row["id"])
            if len(calls) > 5:
                raise OSError(errno.EIO, "Input/output error", str(tmp_path / "exports"))
        return real(store, row)

    monkeypatch.setattr(export, "final_image", failing)
    assert main(["export", "--workspace", str(ws), "--to", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Input/output error" in err[0], err
    assert len(calls) > 5  # it failed half-way through the images
    assert not out.exists(), "a failed export left a partial folder"
    assert list(out.parent.iterdir()) == []  # and no temp folder either

    monkeypatch.setattr(export, "final_image", real)
    assert main(["export", "--workspace", str(ws), "--to", str(out)]) == 0  # no --overwrite needed
    assert "exported 12 augmentation(s)" in capsys.readouterr().out
    assert len(list(out.glob("*/aug_*.png"))) == 12 and (out / "metadata.csv").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["approved"]


def test_a_killed_export_leaves_no_folder_and_the_rerun_needs_no_overwrite(ws, tmp_path):
    _big_approved_workspace(ws, rows=24)
    out = tmp_path / "exports" / "approved"
    out.parent.mkdir()
    proc = start_cli("export", "--workspace", ws, "--to", out)
    building = None
    try:
        while proc.poll() is None and building is None:
            building = next((p for p in out.parent.iterdir() if p.name.startswith(".tmp-") and p.is_dir()), None)
            if building is None:
                time.sleep(0.001)
        if building is not None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None and building is None:
            proc.kill()
        proc.wait()
    assert building is not None and proc.returncode == -signal.SIGKILL, "the export ended before it was killed"
    assert not out.exists()  # complete or absent
    report = cli("check", "--workspace", ws)
    assert "1 temp file(s)" in report.stdout and building.exists()  # reported, not yet removed
    again = cli("export", "--workspace", ws, "--to", out)
    assert again.returncode == 0, again.stderr
    assert len(list(out.glob("*/aug_*.png"))) == 24
    assert sorted(p.name for p in out.parent.iterdir()) == ["approved"]  # the killed one's temp folder is gone
