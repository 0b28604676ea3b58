"""`augment` at its limits, as a user (or an attacker) meets them: a full disk, a FIFO among the images, a count of
augmentations that no disk could hold. Each runs the command line in a child process, with a time bound (and a
memory bound where memory is the risk), and checks what the user sees and what the workspace holds afterwards."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from test_cli_workspace import ROOT, assert_exactly_once, augment_args, cli_env, make_dataset, run_cli


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "train"
    return root, make_dataset(root)


def errors_and_tracebacks(stderr: str) -> tuple[list[str], list[str]]:
    """(the `error:` lines, the lines that belong to a traceback or an 'Exception ignored' report)."""
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    noise = [line for line in lines if line.startswith(("Traceback", "Exception ignored", "  File "))
             or "ProgrammingError" in line]
    return errors, noise


# a full disk --------------------------------------------------------------------------------------------------
FULL_DISK = textwrap.dedent("""
    import errno, sys
    from diffusemix_core.cli.main import main
    from diffusemix_core.workspace.store import ImageStore

    written, allowed = [0], int(sys.argv[1])
    write = ImageStore.put_encoded

    def full(self, relpath, data):  # the disk fills up after `allowed` files
        written[0] += 1
        if written[0] > allowed:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.abspath(relpath)))
        return write(self, relpath, data)

    ImageStore.put_encoded = full
    sys.exit(main(sys.argv[2:]))
""")


def test_a_full_disk_is_one_line_and_the_rerun_finishes(dataset, tmp_path):
    """The disk fills up in the middle of the run: one `error:` line naming the file and the remedy, nothing else
    (no 'Exception ignored in generator ... SQLite objects created in a thread'); once there is space again the
    same command finishes the job, each slot exactly once."""
    train, info = dataset
    ws = tmp_path / "ws"
    args = augment_args(train, ws, "--scorer", "none")
    full = subprocess.run([sys.executable, "-c", FULL_DISK, "5", *args], capture_output=True, text=True,
                          env=cli_env(), cwd=ROOT, timeout=300)
    assert full.returncode == 1, full.stderr
    errors, noise = errors_and_tracebacks(full.stderr)
    assert noise == [], full.stderr
    assert len(errors) == 1 and "no space left on the device" in errors[0] and str(ws) in errors[0], full.stderr
    assert "free some space and rerun the same command" in errors[0]
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert_exactly_once(ws, info)
