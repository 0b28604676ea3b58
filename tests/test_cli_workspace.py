"""`augment`, `status`, `review`, `export` end to end, as a user runs them: subprocesses on a messy dataset.

The dataset has three classes (one named with a space and non-ASCII), images in every awkward mode (EXIF-rotated,
CMYK, 16-bit, palette, animated, alpha) and bad files (truncated JPEG, empty PNG, a decompression-bomb header,
.DS_Store, README.txt). Tests share module-scoped runs because every `augment` process imports torch.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffusemix_core.engine.images import load_image
from helpers import ROOT, TINY, cli_env, kill_when, manifest_count, run_cli, start_cli  # noqa: F401 (shared)

CLASSES = ("cat", "café au lait", "dog")
PER_IMAGE = 2
BATCH = 2


def augment_args(train: Path, ws: Path, *extra: str) -> list[str]:
    fractal_dir = train.parent / "fractals"  # written next to the dataset by make_dataset
    return ["augment", "--train-dir", str(train), "--workspace", str(ws), "--per-image", str(PER_IMAGE),
            "--batch-size", str(BATCH), "--seed", "3", "--fractal-dir", str(fractal_dir), "--no-progress",
            *TINY, *extra]


def _smooth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header that claims 10^10 pixels (no pixel data): a decompression bomb by its header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def make_dataset(root: Path) -> dict:
    """Write the messy dataset; returns the good files with their expected (orientation-corrected) sizes."""
    from diffusemix_core.engine.fractals import FractalLibrary

    FractalLibrary.procedural(6, seed=1, size=64).save(root.parent / "fractals")
    rng = np.random.default_rng(7)
    good: dict[str, tuple[int, int]] = {}  # rel path -> (height, width) after EXIF orientation
    for c in CLASSES:
        (root / c).mkdir(parents=True)
    # plain RGB images of several sizes
    for i, c in enumerate(CLASSES):
        for j in range(2):
            h, w = 40 + 4 * i, 48 + 8 * j
            Image.fromarray(_smooth(rng, h, w)).save(root / c / f"plain {j}.png")
            good[f"{c}/plain {j}.png"] = (h, w)
    # awkward modes
    img = Image.fromarray(_smooth(rng, 40, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: the decoded image is 64 high, 40 wide
    img.save(root / "cat" / "rotated.jpg", exif=exif.tobytes(), quality=90)
    good["cat/rotated.jpg"] = (64, 40)
    Image.fromarray(_smooth(rng, 44, 52)).convert("CMYK").save(root / "dog" / "cmyk.jpg")
    good["dog/cmyk.jpg"] = (44, 52)
    sixteen = (rng.integers(0, 65535, (36, 50))).astype(np.uint16)
    Image.fromarray(sixteen).save(root / "café au lait" / "sixteen.png")
    good["café au lait/sixteen.png"] = (36, 50)
    palette = Image.fromarray(_smooth(rng, 48, 48)).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.save(root / "dog" / "palette.png")
    good["dog/palette.png"] = (48, 48)
    frames = [Image.fromarray(_smooth(rng, 40, 40)) for _ in range(3)]
    frames[0].save(root / "cat" / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    good["cat/anim.gif"] = (40, 40)
    rgba = np.dstack([_smooth(rng, 42, 42), rng.integers(0, 256, (42, 42), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "café au lait" / "alpha.png")
    good["café au lait/alpha.png"] = (42, 42)
    # bad files
    jpg = root / "dog" / "truncated.jpg"
    Image.fromarray(_smooth(rng, 64, 64)).save(jpg, quality=90)
    jpg.write_bytes(jpg.read_bytes()[:300])
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "cat" / "bomb.png").write_bytes(bomb_png())
    (root / "dog" / "not really.png").write_text("this is text, not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "dog" / "README.txt").write_text("notes")
    (root / "stray.png").write_bytes(b"")  # not in a class folder: ignored
    bad = {"dog/truncated.jpg", "cat/empty.png", "cat/bomb.png", "dog/not really.png"}
    return {"good": good, "bad": bad}


def rows(ws: Path, sql: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(ws / "manifest.sqlite")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def choices_by_slot(ws: Path) -> dict:
    return {
        (p, k): (label, prompt, mask, fractal, lam, seed, generated, fractal_image)
        for p, k, label, prompt, mask, fractal, lam, seed, generated, fractal_image in rows(
            ws,
            # Î and the fractal image are stored under their content hash: equal paths are equal bytes, and A is a
            # pure function of them and the choices (tested bit for bit in test_workspace.py)
            "SELECT s.path, a.job_key, a.label, a.prompt, a.mask, a.fractal, a.lam, a.seed, g.path, a.fractal_path "
            "FROM augmentations a JOIN sources s ON s.id = a.source_id JOIN generations g ON g.id = a.generation_id",
        )
    }


def assert_exactly_once(ws: Path, info: dict) -> None:
    """Every slot of every good image once, no duplicate slot, every source once, and a consistent store."""
    n, m = len(info["good"]), PER_IMAGE
    assert rows(ws, "SELECT count(*) FROM augmentations") == [(n * m,)]
    assert rows(ws, "SELECT count(*) FROM (SELECT source_id, job_key FROM augmentations "
                    "GROUP BY source_id, job_key HAVING count(*) > 1)") == [(0,)]
    assert rows(ws, "SELECT count(*) FROM sources") == [(n + len(info["bad"]),)]
    assert_store_consistent(ws)


def assert_store_consistent(ws: Path) -> None:
    """Every referenced file exists and decodes; no orphan, no temp file; no pending journal."""
    referenced = set()
    for table, column in (("sources", "image_path"), ("generations", "path"), ("augmentations", "path"),
                          ("augmentations", "fractal_path")):
        referenced |= {r[0] for r in rows(ws, f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL")}
    on_disk = {p.relative_to(ws).as_posix() for p in (ws / "images").rglob("*") if p.is_file()}
    assert not [p for p in on_disk if Path(p).name.startswith(".")], "temp files left behind"
    assert on_disk == referenced, f"orphans: {on_disk - referenced}, missing: {referenced - on_disk}"
    for rel in referenced:
        assert load_image(ws / rel).dtype == np.uint8
    assert rows(ws, "SELECT count(*) FROM pending_files") == [(0,)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "train"
    info = make_dataset(root)
    return root, info


@pytest.fixture(scope="module")
def first_run(dataset, tmp_path_factory):
    train, info = dataset
    ws = tmp_path_factory.mktemp("ws1") / "workspace"
    result = run_cli(*augment_args(train, ws))
    return ws, result


@pytest.fixture(scope="module")
def killed_then_resumed(dataset, tmp_path_factory):
    """The same command, SIGKILLed once some rows exist, then re-run to the end."""
    train, info = dataset
    ws = tmp_path_factory.mktemp("ws2") / "workspace"
    expected = len(info["good"]) * PER_IMAGE
    count_at_kill = kill_when(start_cli(*augment_args(train, ws)), lambda: manifest_count(ws))
    assert 0 < count_at_kill < expected
    result = run_cli(*augment_args(train, ws))
    return ws, result, count_at_kill


def test_augment_records_everything_and_reports_bad_files(first_run, dataset):
    ws, result = first_run
    train, info = dataset
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for bad in info["bad"]:
        assert f"failed: {bad}:" in result.stdout
    assert "untrained test model" in result.stdout

    sources = {p: (label, status, error, w, h) for p, label, status, error, w, h in rows(
        ws, "SELECT path, label, status, error, width, height FROM sources")}
    assert set(sources) == set(info["good"]) | info["bad"]  # .DS_Store, README.txt, stray.png never seen
    for rel, (h, w) in info["good"].items():
        label, status, error, sw, sh = sources[rel]
        assert (status, error, label) == ("ok", None, rel.split("/")[0])
        assert (sh, sw) == (h, w), rel
    for rel in info["bad"]:
        assert sources[rel][1] == "failed" and sources[rel][2]
    assert "empty" in sources["cat/empty.png"][2]
    assert "pixels" in sources["cat/bomb.png"][2] or "bomb" in sources["cat/bomb.png"][2].lower()

    assert rows(ws, "SELECT count(*) FROM augmentations") == [(len(info["good"]) * PER_IMAGE,)]
    assert {r[0] for r in rows(ws, "SELECT DISTINCT label FROM augmentations")} == set(CLASSES)
    # every output keeps its source's orientation-corrected size (Î as stored; A is composed from it and I)
    for path, w, h in rows(ws, "SELECT g.path, s.width, s.height FROM augmentations a "
                               "JOIN sources s ON s.id = a.source_id JOIN generations g ON g.id = a.generation_id"):
        assert load_image(ws / path).shape == (h, w, 3)
    drifts = [r[0] for r in rows(ws, "SELECT drift FROM augmentations")]
    assert all(0.0 <= d <= 1.0 for d in drifts)
    assert rows(ws, "PRAGMA journal_mode") == [("wal",)]
    assert_store_consistent(ws)


def test_rerun_of_finished_job_changes_nothing(first_run, dataset):
    ws, _ = first_run
    train, _ = dataset
    before = choices_by_slot(ws)
    result = run_cli(*augment_args(train, ws))
    assert result.returncode == 0, result.stderr
    assert "0 augmentations added" in result.stdout
    assert choices_by_slot(ws) == before


def test_sigkill_then_rerun_finishes_exactly_once(killed_then_resumed, dataset, first_run):
    ws, result, count_at_kill = killed_then_resumed
    train, info = dataset
    assert result.returncode == 0, result.stderr
    assert_exactly_once(ws, info)
    # the interrupted-and-resumed workspace equals the uninterrupted one: same choices, same image bytes
    assert choices_by_slot(ws) == choices_by_slot(first_run[0])


def test_larger_per_image_adds_only_the_missing(killed_then_resumed, dataset):
    ws, _, _ = killed_then_resumed
    train, info = dataset
    before = {k: v for k, v in choices_by_slot(ws).items()}
    ids_before = rows(ws, "SELECT id, source_id, job_key FROM augmentations ORDER BY id")
    result = run_cli(*augment_args(train, ws), "--per-image", str(PER_IMAGE + 1))  # the later flag wins
    assert result.returncode == 0, result.stderr
    after = choices_by_slot(ws)
    assert len(after) == len(info["good"]) * (PER_IMAGE + 1)
    assert {k: after[k] for k in before} == before
    assert rows(ws, "SELECT id, source_id, job_key FROM augmentations ORDER BY id")[: len(ids_before)] == ids_before
    assert {k[1] for k in set(after) - set(before)} == {f"slot:{PER_IMAGE}"}
    assert_store_consistent(ws)


def test_two_augment_processes_on_one_workspace_finish_the_job_exactly_once(dataset, first_run, tmp_path):
    """Two people start the same job on one workspace at the same moment: both succeed, every slot is written once,
    the store has no orphan or temp file, and the result equals a single run's."""
    train, info = dataset
    ws = tmp_path / "workspace"
    procs = [subprocess.Popen([sys.executable, "-m", "diffusemix_core", *augment_args(train, ws)], env=cli_env(),
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    n, m = len(info["good"]), PER_IMAGE
    assert rows(ws, "SELECT count(*) FROM augmentations") == [(n * m,)]
    assert rows(ws, "SELECT count(*) FROM sources") == [(n + len(info["bad"]),)]
    assert rows(ws, "SELECT count(*) FROM (SELECT cache_key FROM generations GROUP BY cache_key "
                    "HAVING count(*) > 1)") == [(0,)]
    assert rows(ws, "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL") == [(2,)]
    assert_store_consistent(ws)
    assert choices_by_slot(ws) == choices_by_slot(first_run[0])


def test_status_review_and_export(first_run, tmp_path):
    ws, _ = first_run
    status = run_cli("status", "--workspace", ws, "--json")
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    total = summary["augmentations"]
    assert summary["by_status"]["pending"] == total and total > 0
    assert set(summary["by_label"]) == set(CLASSES)
    assert len(summary["failures"]) == 4

    text = run_cli("status", "--workspace", ws)
    assert text.returncode == 0 and "café au lait" in text.stdout and "failed images:" in text.stdout

    approve = run_cli("review", "--workspace", ws, "--approve", "--label", "café au lait")
    assert approve.returncode == 0, approve.stderr
    n_cafe = rows(ws, "SELECT count(*) FROM augmentations WHERE label = 'café au lait'")[0][0]
    assert approve.stdout.startswith(f"{n_cafe} augmentation(s) marked approved")
    dog_ids = [r[0] for r in rows(ws, "SELECT id FROM augmentations WHERE label = 'dog' ORDER BY id")]
    assert run_cli("review", "-w", ws, "--approve", "--ids", ",".join(map(str, dog_ids[:2]))).returncode == 0
    assert run_cli("review", "-w", ws, "--reject", "--ids", str(dog_ids[0])).returncode == 0
    approved = rows(ws, "SELECT id, label FROM augmentations WHERE status = 'approved' ORDER BY id")
    assert len(approved) == n_cafe + 1

    out = tmp_path / "export"
    result = run_cli("export", "--workspace", ws, "--to", out, "--include-originals", "--zip")
    assert result.returncode == 0, result.stderr
    meta = pd.read_csv(out / "metadata.csv")
    augmented = meta[meta["kind"] == "augmented"]
    assert sorted(augmented["augmentation_id"].astype(int)) == [i for i, _ in approved]
    assert set(augmented["label"]) == {"café au lait", "dog"}
    assert {"file_name", "label", "prompt", "mask", "fractal", "lam", "seed", "source"} <= set(meta.columns)
    for file_name, label in zip(meta["file_name"], meta["label"]):
        assert (out / file_name).is_file()
        assert Path(file_name).parts[0] == label  # these labels are safe as they are
    # a plain ImageFolder-style walk: classes are the sorted folder names, every file decodes
    classes = sorted(d.name for d in out.iterdir() if d.is_dir())
    assert classes == ["café au lait", "dog"]
    walked = sorted(f"{c}/{f.name}" for c in classes for f in (out / c).iterdir())
    assert walked == sorted(meta["file_name"])
    for rel in walked:
        assert load_image(out / rel).ndim == 3
    # Hugging Face datasets loads the folder as is, metadata.csv columns becoming features
    from datasets import load_dataset

    hf = load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(hf) == len(meta) and set(hf["label"]) == {"café au lait", "dog"}
    assert {"image", "prompt", "mask", "fractal", "lam", "seed", "source"} <= set(hf.column_names)
    assert all(row["image"].mode == "RGB" for row in hf)
    assert sorted(zip(hf["label"], hf["source"])) == sorted(zip(meta["label"], meta["source"]))
    exported = sqlite3.connect(out / "manifest.sqlite")
    assert exported.execute("SELECT count(*) FROM augmentations").fetchone()[0] == len(approved)
    assert exported.execute("SELECT count(*) FROM augmentations WHERE file_name IS NULL").fetchone()[0] == 0
    exported.close()
    with zipfile.ZipFile(tmp_path / "export.zip") as zf:
        names = {n for n in zf.namelist() if not n.endswith("/")}
    assert names == {f"export/{p.relative_to(out).as_posix()}" for p in out.rglob("*") if p.is_file()}

    again = run_cli("export", "--workspace", ws, "--to", out)
    assert again.returncode != 0 and "not empty" in again.stderr and "Traceback" not in again.stderr
    overwrite = run_cli("export", "--workspace", ws, "--to", out, "--status", "all", "--overwrite")
    assert overwrite.returncode == 0, overwrite.stderr
    meta_all = pd.read_csv(out / "metadata.csv")
    assert len(meta_all) == rows(ws, "SELECT count(*) FROM augmentations")[0][0]
    assert not list(out.glob("*/orig_*.png"))  # the previous export's originals were cleared
    exports = rows(ws, "SELECT count, status_filter, originals FROM exports ORDER BY id")
    assert exports == [(len(approved), "approved", exports[0][2]), (len(meta_all), "all", 0)]
    assert exports[0][2] > 0


def test_bad_arguments_and_unreadable_datasets_fail_cleanly(tmp_path):
    missing = run_cli("augment", "--train-dir", tmp_path / "nope", "--workspace", tmp_path / "ws", *TINY)
    assert missing.returncode != 0
    assert "Traceback" not in missing.stderr and "nope" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

    bad_only = tmp_path / "bad"
    (bad_only / "cls").mkdir(parents=True)
    (bad_only / "cls" / "a.png").write_bytes(b"")
    (bad_only / "cls" / "b.jpg").write_text("no")
    result = run_cli("augment", "--train-dir", bad_only, "--workspace", tmp_path / "ws2", "--no-progress", *TINY)
    assert result.returncode != 0
    assert "none of the 2 images" in result.stderr and "Traceback" not in result.stderr

    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    (empty / "cls" / "notes.txt").write_text("x")
    result = run_cli("augment", "--train-dir", empty, "--workspace", tmp_path / "ws3", *TINY)
    assert result.returncode != 0 and "no image files" in result.stderr

    assert run_cli("augment", "--train-dir", empty, "--workspace", tmp_path / "ws4", "--per-image", "0").returncode == 2
    lam = run_cli("augment", "--train-dir", bad_only, "--workspace", tmp_path / "ws5", "--lam", "2", *TINY)
    assert lam.returncode != 0 and "[0, 1]" in lam.stderr
    no_ws = run_cli("status", "--workspace", tmp_path / "never")
    assert no_ws.returncode != 0 and "no workspace" in no_ws.stderr


@pytest.mark.parametrize("command", ["augment", "status", "review", "export"])
def test_help_explains_every_flag(command):
    from diffusemix_core.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    result = run_cli(command, "--help")
    assert result.returncode == 0
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in result.stdout, flag
        if action.option_strings:
            assert action.help, f"{command} {action.option_strings} has no help"


def test_batch_size_auto_picks_the_cpu_default_and_records_it(dataset, tmp_path):
    """--batch-size auto measures the GPU's free memory; on a CPU it is the documented 4, recorded with the run."""
    from diffusemix_core.engine.gpu_tuning import AUTO_CPU_BATCH_SIZE

    train, info = dataset
    ws = tmp_path / "ws"
    args = augment_args(train, ws, "--scorer", "none")
    args[args.index("--batch-size") + 1] = "auto"
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert json.loads(rows(ws, "SELECT args FROM runs")[0][0])["batch_size"] == AUTO_CPU_BATCH_SIZE
    assert rows(ws, "SELECT count(*) FROM augmentations") == [(len(info["good"]) * PER_IMAGE,)]
    bad = run_cli(*augment_args(train, ws, "--scorer", "none"), "--batch-size", "many")
    assert bad.returncode == 2 and "whole number" in bad.stderr
