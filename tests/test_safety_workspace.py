"""Issue 7's workspace holes, driven the way they were found: the CLI in subprocesses, a second process, a kill.

* item 3: every decision recorded; ``review --undo`` reverts the last bulk decision, ``review --history ID``;
* item 5: a store whose manifest is missing, empty or unreadable is never opened and nothing in it changes; clean-up
  removes only what the manifest's own crash journal names as written by a dead process;
* item 6: ``check`` (integrity, orphans, missing files; ``--fix`` after the report), backups before every bulk run
  and bulk review (the last KEEP_BACKUPS kept), and the error's restore advice (``check --restore``), followed, gives
  a working workspace;
* item 11: a temp zip of an export killed half-way is gone after the next export or ``check --fix``;
* item 14: a second ``augment`` on one workspace waits for the first (naming it); two runs on different workspaces
  share the cores (what each run gave torch is in its ``runs.args``).

Every workspace is a copy of one made by a real ``augment`` run (module fixture), so each test starts from the same
files. Nothing here imports a project module at module level: the file can be run against an older checkout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, cli_env as shared_cli_env, kill_when, run_cli, start_cli as shared_start_cli

TINY = ["--model", "tiny-random", "--resolution", "64", "--no-progress"]


def cli_env() -> dict:
    """helpers.cli_env with torch's own thread count (these runs' bytes are compared with in-process runs)."""
    return shared_cli_env(OMP_NUM_THREADS=None)


def cli(*args, timeout: int = 240) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=timeout, env=cli_env())


def start_cli(*args) -> subprocess.Popen:
    return shared_start_cli(*args, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The CLI's one-line error (library warnings that are not ours are left out)."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("[transformers]")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def write_train(root: Path, classes=("cat", "dog"), per_class: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def augment_args(train: Path, ws: Path, *, steps: int = 2) -> list:
    return ["augment", "--train-dir", train, "--workspace", ws, "--per-image", "2", "--batch-size", "2", *TINY,
            "--steps", steps]


def query(ws: Path, sql: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(ws / "manifest.sqlite")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder` with its kind, size and mtime: equal snapshots mean nothing was touched."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            out[path.relative_to(folder).as_posix()] = (path.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def files_only(snap: dict[str, tuple]) -> dict[str, tuple]:
    """A snapshot without the manifest's own files (opening a workspace writes its schema version)."""
    return {k: v for k, v in snap.items() if not k.startswith("manifest.sqlite")}


def store_files(ws: Path) -> set[str]:
    return {p.relative_to(ws).as_posix() for p in (ws / "images").rglob("*.png") if not p.name.startswith(".")}


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def store_name(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"images/{digest[:2]}/{digest}.png"


def png_bytes(seed: int, size=(24, 24)) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A workspace made by a real bulk run: 2 classes x 3 images x 2 augmentations."""
    base = tmp_path_factory.mktemp("made")
    train = write_train(base / "train")
    ws = base / "ws"
    result = cli(*augment_args(train, ws))
    assert result.returncode == 0, result.stderr
    assert query(ws, "SELECT count(*) FROM augmentations") == [(12,)]
    return train, ws


@pytest.fixture
def ws(made, tmp_path) -> Path:
    """A private copy of the made workspace."""
    target = tmp_path / "ws"
    shutil.copytree(made[1], target, symlinks=True)
    return target


# ------------------------------------------------------------------------------------------------ item 5
def _no_tables(path: Path) -> None:
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 7")  # a valid SQLite file that holds no table at all
    conn.commit()
    conn.close()


DAMAGES = {
    "deleted": lambda path: path.unlink(),
    "empty": lambda path: path.write_bytes(b""),
    "not sqlite": lambda path: path.write_bytes(b"this is not a database, it was overwritten\n" * 100),
    "no tables": _no_tables,
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_store_whose_manifest_is_damaged_is_not_opened_and_nothing_changes(made, ws, tmp_path, damage):
    train, _ = made
    DAMAGES[damage](ws / "manifest.sqlite")
    out = tmp_path / "out"
    commands = {
        "augment": augment_args(train, ws),
        "status": ["status", "--workspace", ws],
        "review": ["review", "--workspace", ws, "--approve"],
        "export": ["export", "--workspace", ws, "--to", out, "--zip"],
        "check": ["check", "--workspace", ws, "--fix"],
    }
    before = snapshot(ws)
    procs = {name: start_cli(*args) for name, args in commands.items()}  # at once: none may change anything
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=240)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        line = error_line(result)
        assert "holds images" in line and "nothing was changed" in line, (name, line)
        assert "restore" in line and "backup" in line, (name, line)  # what to do
    assert snapshot(ws) == before, "the workspace changed"
    assert not out.exists() and not out.with_suffix(".zip").exists()


def test_clean_up_removes_only_files_the_journal_names_for_a_dead_writer(made, ws, tmp_path):
    """The manifest replaced by a valid but empty one (a fresh workspace's): the next run keeps every image."""
    from diffusemix_core.workspace.folder import Workspace

    fresh = tmp_path / "fresh"
    Workspace(fresh)  # schema only
    images = {rel: (ws / rel).read_bytes() for rel in store_files(ws)}
    assert len(images) > 20
    shutil.copy(fresh / "manifest.sqlite", ws / "manifest.sqlite")
    # a file a writer journalled and wrote, then died before its rows: the one file clean-up may remove
    data = png_bytes(1)
    journalled = store_name(data)
    (ws / journalled).parent.mkdir(parents=True, exist_ok=True)
    (ws / journalled).write_bytes(data)
    conn = sqlite3.connect(ws / "manifest.sqlite")
    conn.execute("INSERT INTO pending_files (path, pid, created_at) VALUES (?, ?, '2026-01-01')",
                 [journalled, dead_pid()])
    conn.commit()
    conn.close()

    other = write_train(tmp_path / "other", classes=("bird",), per_class=1, seed=5)
    result = cli(*augment_args(other, ws))
    assert result.returncode == 0, result.stderr
    assert not (ws / journalled).exists()
    assert query(ws, "SELECT count(*) FROM pending_files") == [(0,)]
    for rel, content in images.items():
        assert (ws / rel).read_bytes() == content, f"{rel} was deleted or changed"
    # the images the manifest does not know are reported, not removed
    report = cli("check", "--workspace", ws)
    assert report.returncode == 1
    assert f"{len(images)} orphan(s)" in report.stdout
    assert all((ws / rel).exists() for rel in images)


# ------------------------------------------------------------------------------------------------ item 6
def test_check_reports_then_fix_removes_orphans_and_dead_temp_files_only(ws):
    referenced = sorted(store_files(ws))
    missing = referenced[0]
    (ws / missing).unlink()
    data = png_bytes(2)
    orphan = store_name(data)
    (ws / orphan).parent.mkdir(parents=True, exist_ok=True)
    (ws / orphan).write_bytes(data)
    temp = ws / "images" / orphan.split("/")[1] / f".tmp-{dead_pid()}-0123456789ab.png"
    temp.write_bytes(data[:100])
    live_temp = temp.with_name(f".tmp-{os.getpid()}-ba9876543210.png")  # a writer that is alive: never touched
    live_temp.write_bytes(data[:100])
    before = snapshot(ws)

    report = cli("check", "--workspace", ws)
    assert report.returncode == 1
    assert "manifest: ok" in report.stdout
    assert f"orphan: {orphan}" in report.stdout and f"missing: {missing}" in report.stdout
    assert "1 orphan(s), 1 missing, 1 temp file(s)" in report.stdout
    assert files_only(snapshot(ws)) == files_only(before)  # a report removes nothing

    fixed = cli("check", "--workspace", ws, "--fix")
    lines = fixed.stdout.splitlines()
    assert any(line.startswith("manifest: ok") for line in lines)
    assert lines.index(f"  orphan: {orphan}") < lines.index("removed 2 file(s)")  # the report comes first
    assert not (ws / orphan).exists() and not temp.exists() and live_temp.exists()
    assert store_files(ws) == set(referenced) - {missing}  # nothing referenced was removed
    assert fixed.returncode == 1  # a missing file is still a problem --fix cannot solve
    again = cli("check", "--workspace", ws)
    assert "0 orphan(s), 1 missing, 0 temp file(s)" in again.stdout


def test_check_finds_a_damaged_manifest_and_fix_then_removes_nothing(ws):
    data = png_bytes(3)
    orphan = store_name(data)
    (ws / orphan).parent.mkdir(parents=True, exist_ok=True)
    (ws / orphan).write_bytes(data)
    conn = sqlite3.connect(ws / "manifest.sqlite")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'idx_augmentations_drift'").fetchone()[0]
    conn.close()
    with open(ws / "manifest.sqlite", "r+b") as f:  # an index page overwritten: the file opens, the check fails
        f.seek((root - 1) * page_size)
        f.write(b"\x0d" + bytes(range(256)) * (page_size // 256 - 1))
    result = cli("check", "--workspace", ws, "--fix")
    assert result.returncode == 1
    assert "manifest: DAMAGED" in result.stdout and "integrity:" in result.stdout
    assert "not fixed" in result.stderr and "restore" in result.stderr
    assert (ws / orphan).exists()


def test_backups_are_kept_to_the_last_few_and_the_restore_advice_works(ws):
    from diffusemix_core.workspace.folder import KEEP_BACKUPS

    backups = ws / "backups"
    assert len(list(backups.glob("*.sqlite"))) == 1  # the bulk run's
    n = KEEP_BACKUPS + 2
    for k in range(n):
        result = cli("review", "--workspace", ws, "--approve" if k % 2 == 0 else "--reject", "--label", "cat")
        assert result.returncode == 0, result.stderr
    kept = sorted(backups.glob("*.sqlite"))
    assert len(kept) == KEEP_BACKUPS
    for path in kept:  # each a consistent, complete copy
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM augmentations").fetchone() == (12,)
        conn.close()
    # the newest backup holds the state before the last bulk review
    before_last = "approved" if (n - 2) % 2 == 0 else "rejected"
    conn = sqlite3.connect(kept[-1])
    assert {r[0] for r in conn.execute("SELECT status FROM augmentations WHERE label = 'cat'")} == {before_last}
    conn.close()

    (ws / "manifest.sqlite").unlink()
    line = error_line(cli("status", "--workspace", ws))
    commands = re.findall(r"`([^`]+)`", line)
    assert commands == [f"python -m diffusemix_core check --workspace '{ws}' --restore"], line
    assert kept[-1].name in line and "-wal" in line  # which backup, and why not to copy it by hand
    for command in commands:  # follow the advice as written: the restore, which checks the result
        argv = shlex.split(command)
        if argv[:3] == ["python", "-m", "diffusemix_core"]:
            result = cli(*argv[3:])
        else:
            result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
    status = cli("status", "--workspace", ws, "--json")
    assert status.returncode == 0
    summary = json.loads(status.stdout)
    assert summary["augmentations"] == 12 and summary["by_label"]["cat"][before_last] == 6


# ------------------------------------------------------------------------------------------------ item 3
def test_every_decision_is_recorded_and_undo_reverts_the_last_bulk_one(ws):
    cat = [r[0] for r in query(ws, "SELECT id FROM augmentations WHERE label = 'cat' ORDER BY id")]
    dog = [r[0] for r in query(ws, "SELECT id FROM augmentations WHERE label = 'dog' ORDER BY id")]
    assert cli("review", "--workspace", ws, "--reject", "--label", "dog").returncode == 0
    assert cli("review", "--workspace", ws, "--approve", "--label", "cat").returncode == 0
    assert cli("review", "--workspace", ws, "--reject", "--ids", cat[0]).returncode == 0  # one item, decided again
    undo = cli("review", "--workspace", ws, "--undo")
    assert undo.returncode == 0, undo.stderr
    assert f"{len(cat) - 1} restored" in undo.stdout and "1 left as they are" in undo.stdout
    status = dict(query(ws, "SELECT id, status FROM augmentations"))
    assert [status[i] for i in cat] == ["rejected"] + ["pending"] * (len(cat) - 1)
    assert {status[i] for i in dog} == {"rejected"}  # an earlier bulk decision is untouched
    history = cli("review", "--workspace", ws, "--history", cat[1])
    lines = history.stdout.splitlines()
    assert len(lines) == 2
    assert "pending -> approved" in lines[0] and "cli, bulk" in lines[0]
    assert "approved -> pending" in lines[1]
    assert len(cli("review", "--workspace", ws, "--history", cat[0]).stdout.splitlines()) == 2
    # the undo is itself recorded and is not undone by the next undo: the one before it is
    again = cli("review", "--workspace", ws, "--undo")
    assert "restored" in again.stdout
    assert {dict(query(ws, "SELECT id, status FROM augmentations"))[i] for i in dog} == {"pending"}
    assert "nothing to undo" in cli("review", "--workspace", ws, "--undo").stdout
    unknown = cli("review", "--workspace", ws, "--history", 9999)
    assert unknown.returncode == 1 and "9999" in error_line(unknown)


# ------------------------------------------------------------------------------------------------ item 11
def _big_approved_workspace(ws: Path, rows: int) -> None:
    """Every augmentation approved, with a large stored A (schema-1 rows), cloned to `rows` rows: a slow zip."""
    noise = np.random.default_rng(0).integers(0, 256, (1100, 1600, 3), dtype=np.uint8)
    import io

    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG", compress_level=0)
    data = buffer.getvalue()
    rel = store_name(data)
    (ws / rel).parent.mkdir(parents=True, exist_ok=True)
    (ws / rel).write_bytes(data)
    conn = sqlite3.connect(ws / "manifest.sqlite")
    columns = [r[1] for r in conn.execute("PRAGMA table_info(augmentations)") if r[1] != "id"]
    first = conn.execute("SELECT min(id) FROM augmentations").fetchone()[0]
    for i in range(rows - 12):
        values = ", ".join("?" if c == "job_key" else c for c in columns)
        conn.execute(f"INSERT INTO augmentations ({', '.join(columns)}) SELECT {values} FROM augmentations "
                     "WHERE id = ?", [f"clone:{i}", first])
    conn.execute("UPDATE augmentations SET path = ?, status = 'approved'", [rel])
    conn.commit()
    conn.close()


def _kill_while_zipping(ws: Path, to: Path) -> Path:
    """Start `export --zip`, SIGKILL it while its temp zip is being written; returns the temp zip left behind."""
    proc = start_cli("export", "--workspace", ws, "--to", to, "--zip", "--overwrite")
    found = kill_when(proc, lambda: next((p for p in to.parent.iterdir()
                                          if p.name.startswith(".tmp-") and p.suffix == ".zip"), None), every=0.001)
    assert found.exists() and not to.with_suffix(".zip").exists()
    return found


def test_a_killed_export_leaves_no_temp_zip_after_the_next_export_or_check_fix(ws, tmp_path):
    import zipfile

    _big_approved_workspace(ws, rows=24)
    # killed, then the next export into the same folder
    to = tmp_path / "exports" / "approved"
    to.parent.mkdir()
    left = _kill_while_zipping(ws, to)
    result = cli("export", "--workspace", ws, "--to", to, "--zip", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert not left.exists()
    assert [p.name for p in to.parent.iterdir() if p.name.startswith(".tmp-")] == []
    with zipfile.ZipFile(to.with_suffix(".zip")) as zf:
        assert zf.testzip() is None and sum(n.endswith(".png") for n in zf.namelist()) == 24

    # killed in a folder no export had finished in yet, then `check --fix`
    other = tmp_path / "elsewhere" / "approved"
    other.parent.mkdir()
    left = _kill_while_zipping(ws, other)
    report = cli("check", "--workspace", ws)
    assert "1 temp file(s)" in report.stdout and left.exists()  # reported before anything is removed
    fixed = cli("check", "--workspace", ws, "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert not left.exists() and "removed 1 file(s)" in fixed.stdout


def test_temp_files_of_others_beside_an_export_are_left_alone(ws, tmp_path):
    """Only names of the writer convention with a dead writer are removed, never another program's files."""
    exports = tmp_path / "exports"
    exports.mkdir()
    dead = dead_pid()
    ours = exports / f".tmp-{dead}-0123456789ab.zip"
    others = [exports / ".tmp-notes.txt", exports / f".tmp-{dead}.json",
              exports / f".tmp-{os.getpid()}-aaaaaaaaaaaa.zip"]  # not ours; ours, but its writer is alive
    (exports / ".tmp-folder").mkdir()  # a folder with our prefix: must not stop the export
    for path in [ours, *others]:
        path.write_bytes(b"x")
    assert cli("review", "--workspace", ws, "--approve").returncode == 0
    result = cli("export", "--workspace", ws, "--to", exports / "a", "--zip")
    assert result.returncode == 0, result.stderr
    assert not ours.exists()
    assert all(p.exists() for p in others) and (exports / ".tmp-folder").is_dir()


# ------------------------------------------------------------------------------------------------ item 14
def test_a_second_run_on_one_workspace_waits_for_the_first_and_names_it(tmp_path):
    """Two `augment` processes started at once on one workspace: one runs, the other says who holds the workspace
    and waits; it then finds everything done (nothing is generated twice)."""
    train = write_train(tmp_path / "train", classes=("a", "b"), per_class=6, seed=9)
    ws = tmp_path / "ws"
    args = augment_args(train, ws, steps=6)  # a run lasts longer than the two start-ups differ
    procs = [start_cli(*args) for _ in range(2)]
    results = [proc.communicate(timeout=240) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results
    waited = [(proc, err) for proc, (_, err) in zip(procs, results) if "waiting:" in err]
    assert len(waited) == 1, [err for _, err in results]
    waiter, err = waited[0]
    holder = procs[1 - procs.index(waiter)]
    line = next(line for line in err.splitlines() if line.startswith("waiting:"))
    assert f"pid {holder.pid}" in line and "augment of train" in line, line
    runs = query(ws, "SELECT started_at, finished_at, augmentations_added, generations_added FROM runs ORDER BY id")
    assert len(runs) == 2
    assert runs[1][0] >= runs[0][1], "the second run started before the first had finished"
    assert runs[0][2] == 24 and runs[1][2] == 0 and runs[1][3] == 0  # nothing done twice


def private_cpu_registry(tmp_path: Path) -> dict:
    """An environment whose temp folder (where runs register their CPU share) is private to this test, so runs of
    other people on this machine do not count."""
    folder = tmp_path / "tmpdir"
    folder.mkdir(exist_ok=True)
    return dict(cli_env(), TMPDIR=str(folder))


def test_two_runs_on_different_workspaces_share_the_cores(tmp_path):
    """Each run records the share it gave torch, as applied in the thread that runs the model."""
    cores = len(os.sched_getaffinity(0))
    env = private_cpu_registry(tmp_path)
    procs = []
    for k in range(2):
        train = write_train(tmp_path / f"train{k}", classes=("a", "b"), per_class=6, seed=k)
        args = map(str, augment_args(train, tmp_path / f"ws{k}", steps=6))
        command = [sys.executable, "-m", "diffusemix_core", *args]
        procs.append((tmp_path / f"ws{k}", subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                             text=True, env=env, cwd=ROOT)))
    for ws, proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    spans, shares = [], []
    for ws, _ in procs:
        started, finished, args = query(ws, "SELECT started_at, finished_at, args FROM runs")[0]
        spans.append((started, finished))
        shares.append(json.loads(args)["cpu_share"])
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], "the runs did not overlap"
    for share in shares:
        assert share["cores"] == cores
        used = {(u["runs"], u["threads"]) for u in share["used"]}
        for runs, threads in used:  # never more than this run's share of the cores
            assert threads == max(1, cores // runs - share["reserve"]), share
        assert (2, max(1, cores // 2 - share["reserve"])) in used, share  # while both ran, each had half


def test_a_share_applies_in_the_thread_that_runs_the_model(tmp_path, monkeypatch):
    """torch keeps its thread count per thread once that thread has computed: a share re-applied in another thread
    (the run's driver) would not reach the model's. 8 cores simulated; a second run registers while the first's
    model thread is working."""
    import tempfile

    import torch

    from diffusemix_core.bulk.cpu_share import CpuShare

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a private registry (see private_cpu_registry)
    seen: list[int] = []
    second_run = threading.Event()

    def model_step(_batch):
        (torch.ones(128, 128) @ torch.ones(128, 128)).sum()
        return torch.get_num_threads()

    with CpuShare(reserve=1, cores=8) as share:
        share.apply()  # the driver's thread, as a run starts
        step = share.bind(model_step)

        def model_thread():
            seen.append(step(None))
            second_run.wait(30)
            seen.append(step(None))

        thread = threading.Thread(target=model_thread)
        thread.start()
        while not seen:
            time.sleep(0.01)
        with CpuShare(reserve=1, cores=8):
            second_run.set()
            thread.join()
    assert seen == [7, 3]  # alone: 8 - 1 (one core for the pipeline); two runs: 8 // 2 - 1
    assert {(u["runs"], u["threads"]) for u in share.describe()["used"]} == {(1, 7), (2, 3)}


def test_a_killed_runs_cpu_registration_stops_counting_and_is_cleaned_up(tmp_path, monkeypatch):
    """Runs count each other through locks the operating system releases when a holder dies (filelock): a run
    killed with SIGKILL stops counting at once, and its file goes once it is stale."""
    import tempfile

    from diffusemix_core.bulk import cpu_share
    from diffusemix_core.bulk.cpu_share import CpuShare

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a private registry
    code = ("import sys, time; from diffusemix_core.bulk.cpu_share import CpuShare; share = CpuShare(); share.__enter__(); "
            "print('registered', flush=True); time.sleep(600)")
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**cli_env(), "TMPDIR": str(tmp_path)}, cwd=ROOT)
    try:
        assert other.stdout.readline().strip() == "registered"
        with CpuShare(reserve=0, cores=4) as share:
            assert CpuShare.active_runs() == 2 and share.apply() == 2
            other.kill()
            other.wait(30)
            assert CpuShare.active_runs() == 1 and share.apply() == 4  # the killed run no longer counts
            files = list(cpu_share._folder().glob("run-*.lock"))
            assert len(files) == 2  # its file stays until it is stale
            monkeypatch.setattr(cpu_share, "STALE_AFTER", 0.0)
            assert CpuShare.active_runs() == 1
            assert [p.name for p in cpu_share._folder().glob("run-*.lock")] == [
                Path(share._registration.lock_file).name]
        assert list(cpu_share._folder().glob("run-*.lock")) == []  # a run that ends removes its own
    finally:
        other.kill()
        other.wait(30)
