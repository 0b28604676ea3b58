"""Every CLI failure is one line on stderr and a non-zero exit status, never a traceback (unless --verbose).

Driven the way a user meets them: `python -m diffusemix_core` in a subprocess on a workspace made by a real
`augment` run, with its manifest overwritten or truncated, its folder made read-only, and `status` piped into
`head -1` through a real shell. What a test cannot make for real (a full disk, a read-only file system, a
read-only folder when the tests run as root) is simulated in-process at the lowest level that reaches it: `os.mkdir`
raising the errno the kernel would, SQLite opened read-only or with a page limit so that SQLite itself reports the
error, and a stand-in command raising each exception type that ``cli.main`` must translate.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.cli import main as cli
from diffusemix_core.errors import ModelUnavailableError
from helpers import ROOT, TINY, cli_env, error_line, run_cli

# Failed images are listed one per line by `status`: this many, with long names, make its output several times a
# pipe's 64 KiB, so `head -1` has exited long before `status` has written everything.
BAD_FILES = 600


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """A training set and the workspace a real `augment` run made of it (2 images augmented, BAD_FILES failed)."""
    root = tmp_path_factory.mktemp("cli-errors")
    train = root / "train"
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (train / label).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(train / label / "a.png")
    for i in range(BAD_FILES):
        (train / "dog" / f"{i:04d} {'x' * 180}.png").write_bytes(b"")  # empty: recorded as failed
    ws = root / "ws"
    result = run_cli("augment", "--train-dir", train, "--workspace", ws, "--no-progress", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (ws / "manifest.sqlite").is_file()
    return {"train": train, "ws": ws}


@pytest.fixture
def ws(made, tmp_path) -> Path:
    """A private copy of the made workspace, to damage."""
    return Path(shutil.copytree(made["ws"], tmp_path / "ws"))


# a damaged manifest -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["status"], ["review", "--approve"], ["augment", "--no-progress", *TINY]])
def test_a_file_that_is_not_a_database_is_one_line(made, ws, command):
    (ws / "manifest.sqlite").write_bytes(b"these are not the bytes of a SQLite database\n" * 200)
    extra = ["--train-dir", made["train"]] if command[0] == "augment" else []
    result = run_cli(command[0], "--workspace", ws, *extra, *command[1:])
    line = error_line(result.stderr)
    assert result.returncode == 1
    assert "manifest" in line and str(ws) in line  # names the file


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_a_truncated_manifest_is_one_line(ws, keep):
    manifest = ws / "manifest.sqlite"
    for leftover in ("manifest.sqlite-wal", "manifest.sqlite-shm"):
        (ws / leftover).unlink(missing_ok=True)
    size = manifest.stat().st_size
    with open(manifest, "r+b") as f:
        f.truncate(int(size * keep))
    result = run_cli("status", "--workspace", ws)
    line = error_line(result.stderr)
    assert result.returncode == 1 and "manifest" in line and str(ws) in line


def test_verbose_keeps_the_traceback(ws):
    (ws / "manifest.sqlite").write_bytes(b"not a database\n" * 200)
    result = run_cli("--verbose", "status", "--workspace", ws)
    assert result.returncode != 0
    assert "Traceback" in result.stderr


# ids SQLite cannot hold, usage errors -------------------------------------------------------------------------
BIG = "1" + "0" * 20  # 10**20: beyond SQLite's 64-bit integers (an OverflowError inside SQLite, once)


@pytest.mark.parametrize("command, value", [
    (["review", "--history", BIG], BIG),
    (["review", "--history", "9" * 23], "9" * 23),
    (["review", "--approve", "--ids", f"3,{BIG}"], BIG),
    (["review", "--approve", "--ids", f"3-{BIG}"], BIG),
    (["review", "--approve", "--ids", "-4"], "-4"),
    (["review", "--auto", "--dry-run", "--scorer", f"#{BIG}"], BIG),
    (["report", "--scorer", BIG], BIG),
])
def test_an_id_sqlite_cannot_hold_is_one_line_naming_it(made, command, value):
    result = run_cli(command[0], "--workspace", made["ws"], *command[1:], timeout=60)
    line = error_line(result.stderr)
    assert result.returncode == 2
    assert f"the id {value}:" in line and "9223372036854775807" in line and f"{command[0]} --help" in line


def test_a_range_too_large_to_name_is_refused_before_it_is_counted_out(made):
    """9e18 ids would take the memory of the machine if the range were expanded first."""
    result = run_cli("review", "--workspace", made["ws"], "--approve", "--ids", "1-9000000000000000000", timeout=60)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "1-9000000000000000000" in line and "32766" in line and "--label" in line


@pytest.mark.parametrize("args, fragments", [
    (["augment", "--per-image", "0"], ["--per-image", "got 0", "augment --help"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'", "python -m diffusemix_core --help"]),
    (["review", "--approve", "--ids", "x"], ["--ids", "'x'", "3-7"]),
])
def test_a_usage_error_is_one_line_naming_the_value(args, fragments):
    result = run_cli(*args, timeout=60)
    line = error_line(result.stderr)
    assert result.returncode == 2 and result.stdout == ""
    for fragment in fragments:
        assert fragment in line


def test_history_of_an_item_without_decisions_says_so(ws):
    result = run_cli("review", "--workspace", ws, "--history", "1", timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == "no decision on augmentation 1 yet: it is pending as it was made\n"
    assert run_cli("review", "--workspace", ws, "--reject", "--ids", "1", timeout=60).returncode == 0
    lines = run_cli("review", "--workspace", ws, "--history", "1", timeout=60).stdout.splitlines()
    assert len(lines) == 1 and "pending -> rejected  (cli, decision #1)" in lines[0]


def test_the_default_model_remedy_names_the_model_and_the_hf_command():
    """huggingface_hub 2 installs `hf`, no longer `huggingface-cli`."""
    message = str(ModelUnavailableError("someone/some-model"))
    assert "'someone/some-model'" in message and "`hf download someone/some-model`" in message
    assert "huggingface-cli" not in message and "\n" not in message


# a read-only workspace ----------------------------------------------------------------------------------------
def _chmod_tree(folder: Path, dirs: int, files: int) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(dirs if path.is_dir() else files)


def test_a_read_only_workspace_is_one_line(ws, monkeypatch, capsys):
    _chmod_tree(ws, 0o555, 0o444)
    try:
        if not os.access(ws, os.W_OK):  # permissions are enforced: the real thing, as a user runs it
            result = run_cli("review", "--workspace", ws, "--approve")
            code, stderr = result.returncode, result.stderr
        else:  # root ignores permissions: make SQLite open the manifest read-only, as on a read-only mount
            real_connect = sqlite3.connect

            def read_only_connect(database, *args, uri=False, **kwargs):
                if not uri and Path(database).name == "manifest.sqlite":
                    database, uri = f"{Path(database).resolve().as_uri()}?mode=ro", True
                return real_connect(database, *args, uri=uri, **kwargs)

            monkeypatch.setattr(sqlite3, "connect", read_only_connect)
            code = cli.main(["review", "--workspace", str(ws), "--approve"])
            stderr = capsys.readouterr().err
    finally:
        _chmod_tree(ws, 0o755, 0o644)
    line = error_line(stderr)
    assert code == 1 and str(ws) in line and "writ" in line  # says what to make writable


# a full disk, a read-only file system, no permission: simulated where the kernel would report them -------------
@pytest.mark.parametrize(
    "code,strerror,expected",
    [
        (errno.ENOSPC, "No space left on device", ["no space left", "free some space", "the run resumes"]),
        (errno.EROFS, "Read-only file system", ["read-only file system", "choose another --workspace"]),
        (errno.EACCES, "Permission denied", ["permission denied", "choose another --workspace"]),
        (errno.EPERM, "Operation not permitted", ["permission denied", "choose another --workspace"]),
        (errno.EIO, "Input/output error", ["Input/output error", "check that path"]),
    ],
)
def test_os_errors_creating_the_workspace_are_one_line(made, tmp_path, monkeypatch, capsys, code, strerror,
                                                       expected):
    mount = tmp_path / "mnt"
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):  # Path.mkdir and os.makedirs both end here
        if Path(path) == mount or mount in Path(path).parents:
            raise OSError(code, strerror, os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    new_ws = mount / "ws"
    status = cli.main(["augment", "--train-dir", str(made["train"]), "--workspace", str(new_ws), "--no-progress",
                       *TINY])
    line = error_line(capsys.readouterr().err)
    assert status == 1
    assert str(mount) in line  # the file the kernel named
    for fragment in expected:
        assert fragment in line


def test_a_full_disk_under_sqlite_is_one_line(made, tmp_path, monkeypatch, capsys):
    """SQLite reports SQLITE_FULL itself when the manifest may not grow (here: by a page limit)."""
    real_connect = sqlite3.connect

    def small_connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.execute("PRAGMA max_page_count = 2")
        return conn

    monkeypatch.setattr(sqlite3, "connect", small_connect)
    new_ws = tmp_path / "ws"
    status = cli.main(["augment", "--train-dir", str(made["train"]), "--workspace", str(new_ws), "--no-progress",
                       *TINY])
    line = error_line(capsys.readouterr().err)
    assert status == 1 and "full" in line and "free some space" in line and str(new_ws) in line


# each exception type main() must translate, raised by a stand-in command --------------------------------------
def _command_raising(monkeypatch, exc: BaseException) -> None:
    real_build_parser = cli.build_parser

    def build_parser():
        parser = real_build_parser()
        parse_args = parser.parse_args

        def parse(argv=None, namespace=None):
            args = parse_args(argv, namespace)

            def func(_args):
                print("some output first")
                raise exc

            args.func = func
            return args

        parser.parse_args = parse
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)


@pytest.mark.parametrize(
    "exc,expected",
    [
        (sqlite3.DatabaseError("file is not a database"), ["manifest.sqlite", "not a SQLite database", "--workspace"]),
        (sqlite3.DatabaseError("database disk image is malformed"), ["manifest.sqlite", "damaged", "recover"]),
        (sqlite3.OperationalError("database or disk is full"), ["no space left", "free some space"]),
        (sqlite3.OperationalError("attempt to write a readonly database"), ["manifest.sqlite", "writable"]),
        (sqlite3.OperationalError("unable to open database file"), ["manifest.sqlite", "cannot be opened"]),
        (sqlite3.OperationalError("database is locked"), ["manifest.sqlite", "locked by another process"]),
        (sqlite3.OperationalError("disk I/O error"), ["manifest.sqlite", "check the disk"]),
        # a write that fails mid-file names no file (shutil.copyfile, f.write): the folder written to is named
        (OSError(errno.ENOSPC, "No space left on device"), ["no space left", "while writing to", "free some space"]),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), ["no space left", "free some space"]),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x.png"), ["'/mnt/ro/x.png'", "read-only"]),
        (PermissionError(errno.EACCES, "Permission denied", "/srv/x"), ["'/srv/x'", "permission denied"]),
        (OSError(errno.ENAMETOOLONG, "File name too long", "/a/b"), ["'/a/b'", "File name too long"]),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/gone", None, "/there"),
         ["'/gone'", "'/there'"]),
        (OSError(errno.EIO, "Input/output error"), ["Input/output error", "check the disk"]),
        (RuntimeError("something nobody planned for"), ["unexpected RuntimeError", "--verbose"]),
    ],
    ids=lambda value: type(value).__name__ + ":" + str(value)[:30] if isinstance(value, BaseException) else "",
)
def test_each_failure_is_one_line_naming_the_file_and_the_remedy(monkeypatch, capsys, tmp_path, exc, expected):
    _command_raising(monkeypatch, exc)
    status = cli.main(["status", "--workspace", str(tmp_path / "ws")])
    out, err = capsys.readouterr()
    line = error_line(err)
    assert status == 1 and out == "some output first\n"
    for fragment in expected:
        assert fragment in line
    assert line.endswith(".")
    with pytest.raises(type(exc)):  # --verbose keeps the exception (and so its traceback)
        cli.main(["status", "--workspace", str(tmp_path / "ws"), "--verbose"])


def test_a_full_disk_names_the_export_folder(monkeypatch, capsys, tmp_path):
    _command_raising(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    out_dir = tmp_path / "exported"
    status = cli.main(["export", "--workspace", str(tmp_path / "ws"), "--to", str(out_dir)])
    line = error_line(capsys.readouterr().err)
    assert status == 1 and f"while writing to '{out_dir}'" in line and "the run resumes" not in line


# a closed pipe --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_status_into_a_pipe_closed_early_ends_quietly(made, reader):
    script = (f'"{sys.executable}" -m diffusemix_core status --workspace "$1" | {reader}; '
              'echo "status exit ${PIPESTATUS[0]}" >&2')
    result = subprocess.run(["bash", "-c", script, "bash", str(made["ws"])], capture_output=True, text=True,
                            env=cli_env(), cwd=ROOT, timeout=120)
    assert result.stderr.splitlines() in (["status exit 141"], ["status exit 0"]), result.stderr[-3000:]
    if reader == "head -1":
        assert result.stdout.startswith(f"workspace {made['ws']}") and result.stdout.count("\n") == 1


def test_status_output_is_bigger_than_a_pipe(made):
    """The premise of the pipe test: `head -1` exits while `status` still has most of its output to write."""
    result = run_cli("status", "--workspace", made["ws"])
    assert result.returncode == 0 and len(result.stdout.encode()) > 2 * 65536
