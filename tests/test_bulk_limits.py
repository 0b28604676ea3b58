"""`augment` at its limits, as a user (or an attacker) meets them: a full disk, a FIFO among the images, a count of
augmentations that no disk could hold. Each runs the command line in a child process, with a time bound (and a
memory bound where memory is the risk), and checks what the user sees and what the workspace holds afterwards."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.bulk import plan
from diffusemix_core.bulk.options import AugmentOptions, MixOptions
from diffusemix_core.bulk.plan import (MAX_SLOTS_PER_SOURCE, Jobs, Planner, count_missing,
                                       manifest_bytes_per_augmentation, read_regular_file)
from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.generation import GenerationResult, GenerationSettings
from diffusemix_core.workspace.folder import Workspace
from helpers import ROOT, cli_env, run_cli
from test_cli_workspace import assert_exactly_once, augment_args, make_dataset

FRACTALS = FractalLibrary.procedural(3, seed=0, size=32)


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


# a FIFO among the images ------------------------------------------------------------------------------------
def test_a_fifo_named_like_an_image_is_skipped_with_its_reason(dataset, tmp_path):
    """`mkfifo cat/x.png` in a class folder (nothing ever writes to it): the run does not wait for it, says which
    entry it skipped and why, and augments every real image exactly once."""
    train, info = dataset
    fifo = train / "cat" / "x.png"
    os.mkfifo(fifo)
    try:
        ws = tmp_path / "ws"
        result = run_cli(*augment_args(train, ws, "--scorer", "none"), timeout=240)
    finally:
        fifo.unlink()
    assert result.returncode == 0, result.stderr
    assert "  skipped: cat/x.png: not a regular file (a FIFO): skipped" in result.stdout.splitlines()
    assert "cat/x.png" in result.stderr and "not regular files" in result.stderr  # the log's warning
    assert_exactly_once(ws, info)  # no row for the FIFO, every slot of every good image once


def test_the_planner_never_blocks_on_a_fifo_it_meets(tmp_path):
    """A FIFO put in place of an image after the scan: the plan reads it without blocking and records why it failed."""
    fifo = tmp_path / "late.png"
    os.mkfifo(fifo)
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(_try_read(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert outcome, "reading the FIFO blocked"
    assert isinstance(outcome[0], OSError) and "not a regular file" in str(outcome[0])
    assert read_regular_file(_image(tmp_path / "real.png")) == (tmp_path / "real.png").read_bytes()


def _try_read(path: Path):
    try:
        return read_regular_file(path)
    except OSError as exc:
        return exc


def _image(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 32, 3), value, np.uint8)).save(path)
    return path


# a count no disk can hold -----------------------------------------------------------------------------------
def test_a_billion_per_image_is_refused_in_one_sentence_within_bounds(dataset, tmp_path):
    """`--per-image 1000000000` (22.8 GB and no augmentation before): refused before anything runs, in one line that
    names the count, the space it needs and the free space, within seconds and a few hundred MB."""
    train, info = dataset
    ws = tmp_path / "ws"
    child = textwrap.dedent("""
        import resource, subprocess, sys, time
        started = time.monotonic()
        result = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        print(result.returncode, peak, time.monotonic() - started)
        sys.stderr.write(result.stderr)
    """)
    argv = [sys.executable, "-m", "diffusemix_core", *augment_args(train, ws)]
    argv[argv.index("--per-image") + 1] = "1000000000"
    result = subprocess.run([sys.executable, "-c", child, *argv], capture_output=True, text=True, env=cli_env(),
                            cwd=ROOT, timeout=180)
    code, peak_kib, seconds = result.stdout.split()
    errors, noise = errors_and_tracebacks(result.stderr)
    assert int(code) == 1 and noise == [] and len(errors) == 1, result.stderr
    assert "augmentations are asked for" in errors[0] and "free" in errors[0] and "--per-image" in errors[0]
    files = len(info["good"]) + len(info["bad"])  # every image file is planned (a bad one fails when decoded)
    assert f"{files * 10**9:,} augmentations" in errors[0]
    assert int(peak_kib) < 400 * 1024, f"peak RSS {int(peak_kib) / 1024:.0f} MB"
    assert float(seconds) < 60
    assert not (ws / "images").exists() or not any((ws / "images").rglob("*.png"))  # nothing was made


STREAMED_RUN = textwrap.dedent("""
    import resource, signal, sqlite3, subprocess, sys, time
    from pathlib import Path

    manifest, started, first = Path(sys.argv[1]) / "manifest.sqlite", time.monotonic(), None
    run = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while run.poll() is None and time.monotonic() - started < 180:
        try:
            with sqlite3.connect(manifest) as conn:
                made = conn.execute("SELECT count(*) FROM augmentations").fetchone()[0]
        except sqlite3.Error:
            made = 0
        if made:  # the first batch is committed: stop the run as a user does (Ctrl-C)
            first = time.monotonic() - started
            run.send_signal(signal.SIGINT)
            break
        time.sleep(0.2)
    else:
        run.kill()
    out, err = run.communicate(timeout=120)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(run.returncode, first, peak)
    sys.stderr.write(err)
""")


def test_ten_million_per_image_that_fit_the_disk_start_at_once_in_bounded_memory(tmp_path):
    """`--per-image 10000000` on one image (its manifest would fit): the plan streams, so the first batch is
    committed within the time bound, in a few hundred MB (listing the slots first took gigabytes and never began);
    Ctrl-C then stops it cleanly."""
    train = tmp_path / "train"
    _image(train / "c" / "a.png")
    ws = tmp_path / "ws"
    argv = [sys.executable, "-m", "diffusemix_core", "augment", "--train-dir", train, "--workspace", ws,
            "--per-image", "10000000", "--batch-size", "1", "--scorer", "none", "--no-progress",
            "--model", "tiny-random", "--resolution", "64", "--steps", "2"]
    result = subprocess.run([sys.executable, "-c", STREAMED_RUN, str(ws), *map(str, argv)], capture_output=True,
                            text=True, env=cli_env(), cwd=ROOT, timeout=400)
    code, first, peak_kib = result.stdout.split()
    assert first != "None", f"no batch was committed in 180 s: {result.stderr[-2000:]}"
    assert int(code) == 130 and "stopped early" in result.stderr, result.stderr[-2000:]
    assert int(peak_kib) < 1024 * 1024, f"peak RSS {int(peak_kib) / 1024:.0f} MB"


def test_the_plan_is_a_stream_whatever_the_count(tmp_path):
    """10⁹ slots for one image: the jobs are never listed, the missing count is arithmetic, and the first piece of
    the plan (MAX_SLOTS_PER_SOURCE slots) comes at once."""
    jobs = Jobs(10**9)
    assert len(jobs) == 10**9 and "slot:999999999" in jobs and "slot:1000000000" not in jobs
    assert "slot:01" not in jobs and "prompt:autumn" not in jobs and "slot:-1" not in jobs
    assert list(itertools.islice(jobs, 2)) == [("slot:0", 0, None), ("slot:1", 1, None)]
    prompts = Jobs(3, ("autumn", "snowy"))
    assert len(prompts) == 2 and "prompt:snowy" in prompts and "slot:0" not in prompts
    ws = Workspace(tmp_path / "ws")
    train = tmp_path / "train"
    _image(train / "c" / "one.png")
    assert count_missing(ws.manifest, [("c/one.png", "c")], jobs) == 10**9
    mixer = MixOptions().mixer(None, FRACTALS)
    planner = Planner(ws.manifest, ws.store, train, mixer, jobs, seed=0, settings_key={})
    started = time.monotonic()
    with ws.manifest.session() as db:
        pieces = planner.plan_source(db, "c/one.png", "c")
        first, second = next(pieces), next(pieces)
        pieces.close()
    assert time.monotonic() - started < 5
    assert [s.job_key for s in first.slots] == [f"slot:{i}" for i in range(MAX_SLOTS_PER_SOURCE)]
    assert second.slots[0].job_key == f"slot:{MAX_SLOTS_PER_SOURCE}" and first.first and not second.first


def test_a_file_planned_in_pieces_gives_the_manifest_of_one_piece(tmp_path):
    """Pieces of a file are only a way to bound memory: the same rows, choices and images as one piece, and the
    run's summary counts files, not pieces."""
    train = tmp_path / "train"
    for k, c in enumerate(("a", "b")):
        for i in range(2):
            _image(train / c / f"{i}.png", 40 * k + 60 * i + 10)

    def run(name: str, max_slots: int | None):
        ws = Workspace(tmp_path / name)
        with _max_slots(max_slots):
            summary = run_augment(ws, train, AugmentOptions(per_image=5, batch_size=3, seed=2, scorer="none"),
                                  fractals=FRACTALS, generator=Echo())
        with ws.manifest.session() as db:
            rows = db.execute("SELECT s.path, a.job_key, a.prompt, a.mask, a.fractal, a.seed, a.lam, g.path "
                              "FROM augmentations a JOIN sources s ON s.id = a.source_id "
                              "JOIN generations g ON g.id = a.generation_id ORDER BY 1, 2").fetchall()
            sources = db.execute("SELECT count(*) FROM sources").fetchone()[0]
        return summary, rows, sources

    whole, rows, sources = run("whole", None)
    pieces, piece_rows, piece_sources = run("pieces", 2)
    assert rows == piece_rows and len(rows) == 20 and sources == piece_sources == 4
    for summary in (whole, pieces):
        assert (summary.images_processed, summary.images_failed, summary.augmentations_added) == (4, 0, 20)


class _max_slots:
    """Plan with at most `n` slots per piece (None: the default)."""

    def __init__(self, n: int | None) -> None:
        self.n = n

    def __enter__(self):
        self.saved = plan.MAX_SLOTS_PER_SOURCE
        if self.n is not None:
            plan.MAX_SLOTS_PER_SOURCE = self.n

    def __exit__(self, *exc):
        plan.MAX_SLOTS_PER_SOURCE = self.saved


class Echo:
    """Î = I: a generator that makes the run fast and its images known."""

    settings = GenerationSettings(model="tiny-random", resolution=64, steps=2, device="cpu")

    def load(self) -> None:
        pass

    def generate(self, requests, **kwargs):
        return [GenerationResult(image=r.image.copy(), used_seed=r.seed, retries=0) for r in requests]


def test_the_estimate_of_manifest_bytes_stays_below_what_rows_take(tmp_path):
    """The refusal says 'at least N bytes each': N (from the schema) is below what one more augmentation really
    adds to the manifest (measured: used pages before and after 60 more augmentations)."""
    train = tmp_path / "train"
    for i in range(6):
        _image(train / "c" / f"{i}.png", 20 * i + 5)
    ws = Workspace(tmp_path / "ws")

    def used_bytes() -> int:
        conn = sqlite3.connect(ws.db_path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages, free, size = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                                 for p in ("page_count", "freelist_count", "page_size"))
            return (pages - free) * size
        finally:
            conn.close()

    run_augment(ws, train, AugmentOptions(per_image=10, scorer="none"), fractals=FRACTALS, generator=Echo())
    before = used_bytes()
    run_augment(ws, train, AugmentOptions(per_image=20, scorer="none"), fractals=FRACTALS, generator=Echo())
    added = (used_bytes() - before) / 60
    with ws.manifest.session() as db:
        estimate = manifest_bytes_per_augmentation(db)
    assert 200 < estimate < added, (estimate, added)
