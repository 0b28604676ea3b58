"""Workspace library: schema, atomic content-addressed store, crash clean-up, bulk runs (resume, cache, cancel,
streaming), save/load of single records, review under concurrency, export safety."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffusemix_core.engine.diffusemix import Choice, DiffuseMix
from diffusemix_core.errors import BadArgumentError, WorkspaceError
from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.prompts import PromptEntry, PromptLibrary
from diffusemix_core.bulk.runner import run_augment, scan_train_dir
from diffusemix_core.bulk.options import AugmentOptions, MixOptions
from diffusemix_core.workspace.manifest import generation_cache_key
from diffusemix_core.workspace.files import safe_join
from diffusemix_core.workspace.labels import UNLABELLED, sanitize_label
from diffusemix_core.workspace.folder import Workspace

FRACTALS = FractalLibrary.procedural(4, seed=0, size=64)


def write_train(root: Path, classes=("a", "b b"), per_class: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (32 + 4 * i, 40, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


class CountingGenerator:
    """Wraps the real generator to see what the workspace asks of the model."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, requests, **kwargs):
        self.calls.append(len(requests))
        return self.inner.generate(requests, **kwargs)


def count(ws: Workspace, sql: str, params=()) -> int:
    with ws.manifest.session() as db:
        return db.execute(sql, params).fetchone()[0]


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws")


# schema and store --------------------------------------------------------------------------------------------
def test_schema_has_the_documented_columns_and_wal(ws):
    with ws.manifest.session() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {t: set(db[t].columns_dict) for t in db.table_names()}
    assert {"id", "path", "label", "sha256", "width", "height", "status", "error"} <= columns["sources"]
    assert {"source_id", "prompt", "prompt_text", "seed", "model", "revision", "steps", "guidance_scale",
            "image_guidance_scale", "resolution", "path", "cache_key"} <= columns["generations"]
    assert {"id", "source_id", "generation_id", "label", "prompt", "mask", "fractal", "lam", "seed", "path",
            "status", "created_at", "drift"} <= columns["augmentations"]
    assert {"text", "enabled"} <= columns["prompts"]
    assert {"created_at", "path", "count", "status_filter"} <= columns["exports"]
    Workspace(ws.path)  # re-opening is idempotent
    with pytest.raises(WorkspaceError, match="no workspace"):
        Workspace(ws.path.parent / "missing", create=False)


def test_store_is_content_addressed_and_atomic(ws):
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    rel = ws.store.put(img)
    assert rel == ws.store.put(img.copy())  # same pixels, same file
    assert rel.startswith("images/") and Path(rel).name[:2] == Path(rel).parent.name
    np.testing.assert_array_equal(ws.store.read(rel), img)
    assert not [p for p in ws.store.path.rglob(".tmp-*")]


def test_dead_writers_temp_files_and_orphans_are_cleaned(ws):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    sub = ws.store.path / "ab"
    sub.mkdir()
    (sub / f".tmp-{dead_pid}-deadbeef.png").write_bytes(b"half")
    live_tmp = sub / f".tmp-{os.getpid()}-cafe.png"
    live_tmp.write_bytes(b"being written")
    Workspace(ws.path)  # opening removes the dead writer's temp file only
    assert not (sub / f".tmp-{dead_pid}-deadbeef.png").exists() and live_tmp.exists()
    live_tmp.unlink()

    orphan = ws.store.put(np.zeros((4, 4, 3), np.uint8))
    protected = ws.store.put(np.ones((4, 4, 3), np.uint8))
    with ws.manifest.session() as db:
        db["pending_files"].insert_all([{"path": orphan, "pid": dead_pid, "created_at": "x"},
                                        {"path": protected, "pid": os.getpid(), "created_at": "x"}])
    assert ws.gc() == 1
    assert not (ws.path / orphan).exists() and (ws.path / protected).exists()
    assert count(ws, "SELECT count(*) FROM pending_files WHERE pid = ?", [dead_pid]) == 0


def test_prompt_library_round_trip(ws):
    assert ws.manifest.get_prompt_library().enabled() == PromptLibrary.default().enabled()
    lib = PromptLibrary([PromptEntry("autumn"), PromptEntry("snowy", enabled=False)], template="Make it {prompt}")
    ws.manifest.set_prompt_library(lib)
    back = ws.manifest.get_prompt_library()
    assert back.entries == lib.entries and back.template == "Make it {prompt}"


def test_scan_ignores_hidden_and_non_images_and_keeps_labels(tmp_path):
    root = write_train(tmp_path / "t", classes=("café au lait", "z"), per_class=1)
    (root / "café au lait" / ".hidden.png").write_bytes(b"x")
    (root / "z" / "notes.TXT").write_text("x")
    (root / "z" / "UPPER.PNG").write_bytes(b"x")
    (root / ".git").mkdir()
    (root / ".git" / "x.png").write_bytes(b"x")
    (root / "z" / "nested").mkdir()
    (root / "z" / "nested" / "deep.jpg").write_bytes(b"x")
    assert scan_train_dir(root) == [("café au lait/0.png", "café au lait"), ("z/0.png", "z"),
                                    ("z/UPPER.PNG", "z"), ("z/nested/deep.jpg", "z")]
    with pytest.raises(BadArgumentError, match="not a folder"):
        scan_train_dir(tmp_path / "missing")


# bulk runs ---------------------------------------------------------------------------------------------------
def test_run_streams_in_batches_resumes_and_reuses_generations(tmp_path, ws, tiny_generator):
    train = write_train(tmp_path / "train")
    gen = CountingGenerator(tiny_generator)
    seen = []
    summary = run_augment(ws, train, AugmentOptions(per_image=2, batch_size=2), fractals=FRACTALS, generator=gen,
                          progress=lambda p: seen.append((p.done, p.total)))
    assert summary.images_processed == 6 and summary.augmentations_added == 12 and summary.images_failed == 0
    assert seen == [(0, 12), (4, 12), (8, 12), (12, 12)]  # in augmentations, after every committed batch
    assert gen.calls == [4, 4, 4]  # never more than one batch of images (x slots) at a time
    assert count(ws, "SELECT count(*) FROM generations") == 12

    # a finished job: nothing decoded for the model, nothing added
    gen.calls.clear()
    again = run_augment(ws, train, AugmentOptions(per_image=2, batch_size=2), fractals=FRACTALS, generator=gen)
    assert (again.images_skipped, again.augmentations_added, gen.calls) == (6, 0, [])

    # augmentation rows lost but generations kept: Î comes from the cache, not the model
    def slots_of_source_1():
        return {r["job_key"]: (r["prompt"], r["mask"], r["fractal"], r["seed"], ws.final_image(r).tobytes())
                for r in ws.manifest.list_augmentations() if r["source_id"] == 1}

    before = slots_of_source_1()
    with ws.manifest.session() as db:
        db.execute("DELETE FROM augmentations WHERE source_id = 1")
    third = run_augment(ws, train, AugmentOptions(per_image=2, batch_size=2), fractals=FRACTALS, generator=gen)
    assert (third.augmentations_added, third.generations_reused, third.generations_added, gen.calls) == (2, 2, 0, [])
    after = slots_of_source_1()
    assert after == before  # same choices, bit-identical final images

    # the cache key holds everything that determines Î
    row = ws.manifest.list_augmentations(limit=1)[0]
    with ws.manifest.session() as db:
        pixels, key = db.execute("SELECT s.pixels_sha256, g.cache_key FROM generations g JOIN sources s "
                                 "ON s.id = g.source_id WHERE g.id = ?", [row["generation_id"]]).fetchone()
    settings = tiny_generator.settings.cache_key()
    assert key == generation_cache_key(pixels, row["prompt_text"], settings, row["seed"])
    assert key != generation_cache_key(pixels, row["prompt_text"], dict(settings, steps=99), row["seed"])


def test_bulk_rows_are_the_records_the_engine_makes_one_at_a_time(tmp_path, ws, tiny_generator):
    """A bulk run and the app's single augmentation agree: each stored A is what DiffuseMix.augment_batch makes for
    the same source and choices, and the stored row is that record's choices."""
    train = write_train(tmp_path / "train", per_class=1)
    run_augment(ws, train, AugmentOptions(per_image=2, batch_size=2, mix=MixOptions(lam=0.35)), fractals=FRACTALS,
                generator=tiny_generator)
    dm = DiffuseMix(fractals=FRACTALS, generator=tiny_generator, lam=0.35)
    rows = ws.manifest.list_augmentations(limit=100)
    assert len(rows) == 4
    for row in rows:
        loaded = ws.load_record(row["id"])
        choice = Choice(prompt=row["prompt"], mask=row["mask"], fractal=row["fractal"], seed=row["seed"])
        (single,) = dm.augment_batch([loaded.original], [choice])
        # Î of a batch equals Î alone within 1/255, so A does too
        assert np.abs(single.final.astype(int) - loaded.final.astype(int)).max() <= 1
        recomposed = dm.compose(loaded.original, loaded.generated, choice, settings=dm.settings)
        np.testing.assert_array_equal(recomposed.final, loaded.final)
        expected = {k: v for k, v in single.choices().items() if k not in ("label", "source", "used_seed")}
        assert {k: loaded.choices()[k] for k in expected} == expected
        assert loaded.label == row["label"] and row["label"] in ("a", "b b")


def test_same_run_in_two_workspaces_gives_the_same_manifest(tmp_path, tiny_generator):
    train = write_train(tmp_path / "train", per_class=2)

    def manifest(path):
        w = Workspace(path)
        run_augment(w, train, AugmentOptions(per_image=2, seed=5), fractals=FRACTALS, generator=tiny_generator)
        return [(r["source_path"], r["job_key"], r["label"], r["prompt"], r["mask"], r["fractal"], r["seed"],
                 r["lam"], w.final_image(r).tobytes()) for r in w.manifest.list_augmentations()]

    first = manifest(tmp_path / "w1")
    assert first == manifest(tmp_path / "w2")
    other_seed = Workspace(tmp_path / "w3")
    run_augment(other_seed, train, AugmentOptions(per_image=2, seed=6), fractals=FRACTALS, generator=tiny_generator)
    assert [r["seed"] for r in other_seed.manifest.list_augmentations()] != [r[6] for r in first]


def test_cancel_stops_between_batches_and_resume_completes(tmp_path, ws, tiny_generator):
    train = write_train(tmp_path / "train")
    cancel = threading.Event()
    summary = run_augment(ws, train, AugmentOptions(batch_size=2), fractals=FRACTALS, generator=tiny_generator,
                          cancel=cancel, progress=lambda p: cancel.set() if p.done >= 2 else None)
    # no batch starts after the cancel; the one the model was making when it came is kept, not thrown away
    assert summary.cancelled and summary.images_processed in (2, 4)
    assert count(ws, "SELECT count(*) FROM augmentations") == summary.images_processed
    rest = run_augment(ws, train, AugmentOptions(batch_size=2), fractals=FRACTALS, generator=tiny_generator)
    assert (rest.images_skipped, rest.images_processed) == (summary.images_processed, 6 - summary.images_processed)
    assert count(ws, "SELECT count(*) FROM augmentations") == 6


def test_all_prompts_makes_one_per_enabled_prompt(tmp_path, ws, tiny_generator):
    train = write_train(tmp_path / "train", classes=("x",), per_class=2)
    lib = PromptLibrary([PromptEntry("autumn"), PromptEntry("snowy"), PromptEntry("mosaic", enabled=False)])
    summary = run_augment(ws, train, AugmentOptions(all_prompts=True), prompts=lib, fractals=FRACTALS,
                          generator=tiny_generator)
    assert summary.augmentations_added == 4
    with ws.manifest.session() as db:
        pairs = sorted(db.execute("SELECT source_id, prompt FROM augmentations").fetchall())
        assert db.execute("SELECT text FROM prompts ORDER BY position").fetchall() == [("autumn",), ("snowy",),
                                                                                       ("mosaic",)]
    assert pairs == [(1, "autumn"), (1, "snowy"), (2, "autumn"), (2, "snowy")]


def test_bad_run_arguments(tmp_path, ws, tiny_generator):
    train = write_train(tmp_path / "train", classes=("x",), per_class=1)
    for options in (lambda: AugmentOptions(per_image=0), lambda: AugmentOptions(batch_size=0),
                    lambda: AugmentOptions(mix=MixOptions(lam=1.5)), lambda: AugmentOptions(seed=-1)):
        with pytest.raises(BadArgumentError):
            run_augment(ws, train, options(), fractals=FRACTALS, generator=tiny_generator)
    (tmp_path / "empty" / "c").mkdir(parents=True)
    with pytest.raises(BadArgumentError, match="no image files"):
        run_augment(ws, tmp_path / "empty", fractals=FRACTALS, generator=tiny_generator)


def test_changed_file_is_augmented_again_and_its_failure_forgotten(tmp_path, ws, tiny_generator):
    train = write_train(tmp_path / "train", classes=("x",), per_class=1)
    bad = train / "x" / "late.png"
    bad.write_bytes(b"\x89PNG garbage")
    first = run_augment(ws, train, fractals=FRACTALS, generator=tiny_generator)
    assert first.images_failed == 1 and first.failures[0][0] == "x/late.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(bad)  # the user fixes the file
    second = run_augment(ws, train, fractals=FRACTALS, generator=tiny_generator)
    assert (second.images_failed, second.images_processed) == (0, 1)
    assert ws.manifest.summary()["failures"] == []


# single records (the app) ------------------------------------------------------------------------------------
def test_save_and_load_record_round_trip_without_the_model(ws, tiny_generator, photo):
    dm = DiffuseMix(fractals=FRACTALS, generator=tiny_generator, lam=0.3)
    record = dm.augment(photo, prompt="aurora", mask="top", seed=11)
    aug_id = ws.save_record(record)
    assert ws.save_record(record) == aug_id  # idempotent
    row = ws.manifest.get_augmentation(aug_id)
    assert (row["label"], row["status"], row["prompt"], row["mask"]) == (UNLABELLED, "pending", "aurora", "top")
    assert 0.0 <= row["drift"] <= 1.0

    unet_calls = tiny_generator.counters["unet"]
    loaded = ws.load_record(aug_id)
    for name in ("original", "generated", "mask", "hybrid", "fractal", "final"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(record, name), err_msg=name)
    assert loaded.choices() == record.choices()
    remixed = dm.remix(loaded, lam=0.0, mask="left")  # re-mix with no model call
    np.testing.assert_array_equal(remixed.final, remixed.hybrid)
    assert tiny_generator.counters["unet"] == unet_calls

    labelled = ws.save_record(dataclasses.replace(record, label="café"))
    assert ws.manifest.get_augmentation(labelled)["label"] == "café"
    assert count(ws, "SELECT count(*) FROM generations") == 1  # same Î, stored once
    with pytest.raises(WorkspaceError, match="no augmentation"):
        ws.manifest.get_augmentation(999)


# review ------------------------------------------------------------------------------------------------------
def _fake_rows(ws: Workspace, n: int) -> list[int]:
    """n augmentation rows pointing at one stored image (review does not look at pixels)."""
    img = ws.store.put(np.zeros((8, 8, 3), np.uint8))
    with ws.manifest.session() as db:
        db["sources"].insert({"path": "x.png", "label": "x", "sha256": "s", "status": "ok", "created_at": "t"})
        db["generations"].insert({"source_id": 1, "prompt": "p", "prompt_text": "p", "seed": 0, "requested_seed": 0,
                                  "model": "m", "path": img, "cache_key": "k", "created_at": "t"})
        db["augmentations"].insert_all(
            {"source_id": 1, "generation_id": 1, "job_key": f"slot:{i}", "label": ["x", "y"][i % 2],
             "prompt": ["autumn", "snowy"][i % 3 == 0], "mask": "left", "fractal": "f", "lam": 0.2, "seed": i,
             "path": img, "drift": i / n, "created_at": "t"} for i in range(n))
    return list(range(1, n + 1))


def test_review_filters(ws):
    _fake_rows(ws, 10)
    assert ws.review("approved", label="x", max_drift=0.45).matched == 3  # i = 0, 2, 4
    assert ws.review("rejected", prompt="snowy", current_status="pending").matched == 3  # i = 3, 6, 9 (0 is approved)
    assert ws.review("approved", ids=[10, 11]).matched == 1
    assert ws.manifest.summary()["by_status"] == {"pending": 4, "approved": 4, "rejected": 2}
    assert [r["id"] for r in ws.manifest.list_augmentations(order="drift", limit=2)] == [10, 9]
    with pytest.raises(BadArgumentError):
        ws.review("maybe")


def test_concurrent_review_from_two_threads_loses_nothing(ws):
    ids = _fake_rows(ws, 200)
    errors = []

    def worker(my_ids, status):
        try:
            for i in my_ids:  # one transaction per id: maximal interleaving
                assert ws.review(status, ids=[i]).matched == 1
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(ids[0::2], "approved")),
               threading.Thread(target=worker, args=(ids[1::2], "rejected"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with ws.manifest.session() as db:
        status = dict(db.execute("SELECT id, status FROM augmentations").fetchall())
    assert all(status[i] == ("approved" if i % 2 else "rejected") for i in ids)


def test_concurrent_saves_and_reviews_from_threads(ws, tiny_generator, photo):
    dm = DiffuseMix(fractals=FRACTALS, generator=tiny_generator)
    base = dm.augment(photo, seed=3)
    records = [dm.remix(base, lam=i / 20) for i in range(20)]
    saved: list[list[int]] = [[], []]
    errors = []

    def saver(k):
        try:
            for rec in records[k::2]:
                aug_id = ws.save_record(rec)
                saved[k].append(aug_id)
                ws.review("approved", ids=[aug_id]).matched
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=saver, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ids = saved[0] + saved[1]
    assert len(set(ids)) == 20
    assert ws.manifest.summary()["by_status"]["approved"] == 20
    assert count(ws, "SELECT count(*) FROM generations") == 1
    assert count(ws, "SELECT count(*) FROM pending_files") == 0


# export ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "label, expected",
    [
        ("café au lait", "café au lait"),
        ("../../etc", "_.._etc"),
        ("..", "_"),
        (".", "_"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("nul\x00byte", "nul_byte"),
        ("tab\there", "tab_here"),
        (".hidden", "hidden"),
        ("  spaced  ", "spaced"),
        ("CON", "_CON"),
        ("lpt1.txt", "_lpt1.txt"),
        ("what?", "what_"),
        ("", "_"),
        (None, UNLABELLED),
        ("猫", "猫"),
    ],
)
def test_sanitize_label(label, expected):
    name = sanitize_label(label)
    assert name == expected
    assert "/" not in name and "\x00" not in name and name not in (".", "..")


def test_sanitize_label_cuts_long_names():
    assert len(sanitize_label("é" * 500).encode()) <= 180


@pytest.mark.parametrize("parts", [("..", "x.png"), ("a", "../x.png"), ("/abs",), ("a/b",), ("",), ("a\x00",)])
def test_safe_join_refuses_escapes(tmp_path, parts):
    with pytest.raises(WorkspaceError):
        safe_join(tmp_path / "out", *parts)


def test_safe_join_refuses_symlinked_escape(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path)
    with pytest.raises(WorkspaceError, match="outside"):
        safe_join(out, "link", "x.png")
    assert safe_join(out, "café au lait", "aug_1.png") == out.resolve() / "café au lait" / "aug_1.png"


def test_export_with_hostile_labels_stays_inside(tmp_path, ws, tiny_generator, photo):
    dm = DiffuseMix(fractals=FRACTALS, generator=tiny_generator)
    base = dm.augment(photo, seed=1)
    labels = ["../../escape", "a/b", "a_b", "A_B", "café au lait"]
    for i, label in enumerate(labels):
        rec = dm.remix(base, lam=0.1 * i)
        rec.label = label
        ws.save_record(rec, status="approved")
    out = tmp_path / "deep" / "out"
    result = ws.export(out)
    assert result.count == len(labels)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "ws" not in p.relative_to(tmp_path).parts]
    assert all(out.resolve() in p.resolve().parents for p in written)
    meta = pd.read_csv(out / "metadata.csv")
    assert sorted(meta["label"]) == sorted(labels)  # the original text is kept
    folders = {Path(f).parts[0] for f in meta["file_name"]}
    assert len(folders) == len(labels)  # "a/b", "a_b" and "A_B" do not collide
    assert "café au lait" in folders


def test_export_target_validation(tmp_path, ws):
    _fake_rows(ws, 2)
    with pytest.raises(WorkspaceError, match="overlaps the workspace"):
        ws.export(ws.path / "export", status="all")
    with pytest.raises(WorkspaceError, match="overlaps the workspace"):
        ws.export(ws.path.parent, status="all")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WorkspaceError, match="is a file"):
        ws.export(tmp_path / "afile", status="all")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(WorkspaceError, match="not empty"):
        ws.export(busy, status="all")
    ws.export(busy, status="all", overwrite=True)
    assert (busy / "mine.txt").read_text() == "keep"  # not ours: left alone
    with pytest.raises(WorkspaceError, match="zip path"):
        ws.export(tmp_path / "z", status="all", make_zip=tmp_path / "z" / "inside.zip")
    result = ws.export(tmp_path / "ok", status="all", make_zip=tmp_path / "elsewhere" / "data.zip")
    assert result.zip_path.is_file() and result.count == 2
    with pytest.raises(BadArgumentError):
        ws.export(tmp_path / "x", status="bogus")
    assert [e["count"] for e in ws.manifest.list_exports()] == [2, 2]


def test_pipeline_and_one_thread_give_the_same_manifest_and_bytes(tmp_path, tiny_generator):
    """The stages run concurrently by default; one after another with threads=1. Same rows (ids included: batches
    are committed in order), same image files byte for byte."""
    train = write_train(tmp_path / "train", classes=("a", "b", "c"), per_class=3)
    (train / "b" / "broken.png").write_bytes(b"\x89PNG not really")

    def run(name, threads):
        w = Workspace(tmp_path / name)
        summary = run_augment(w, train, AugmentOptions(per_image=2, batch_size=2, seed=3, threads=threads),
                              fractals=FRACTALS, generator=tiny_generator)
        with w.manifest.session() as db:
            tables = {t: [tuple(r) for r in db.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()]
                      for t in ("sources", "generations", "augmentations")}
        files = {p.relative_to(w.path).as_posix(): p.read_bytes() for p in w.store.path.rglob("*.png")}
        return summary, tables, files

    serial, serial_tables, serial_files = run("serial", 1)
    piped, piped_tables, piped_files = run("piped", None)
    assert serial.augmentations_added == piped.augmentations_added == 18 and serial.images_failed == 1

    def without_times(table, name):
        columns = {"sources": ("created_at",), "generations": ("created_at",),
                   "augmentations": ("created_at", "run_id")}[name]
        w = Workspace(tmp_path / "serial")
        names = [c.name for c in w.manifest.connect()[name].columns]
        keep = [i for i, c in enumerate(names) if c not in columns]
        return [tuple(row[i] for i in keep) for row in table]

    for name in serial_tables:
        assert without_times(serial_tables[name], name) == without_times(piped_tables[name], name), name
    assert serial_files == piped_files and len(piped_files) > 18


def test_the_run_leaves_a_preview_of_every_augmentation_and_a_lost_one_is_remade(tmp_path, ws, tiny_generator):
    from diffusemix_core.workspace.thumbnails import THUMB_SIDE, row_key, thumbnail_png

    train = write_train(tmp_path / "train", per_class=2)
    run_augment(ws, train, AugmentOptions(per_image=2), fractals=FRACTALS, generator=tiny_generator)
    rows = ws.manifest.list_augmentations()
    assert len(rows) == 8
    for row in rows:
        path = ws.thumbnails.path_of(row_key(row))
        assert path.is_file()  # made by the run, not on view
        assert path.read_bytes() == thumbnail_png(ws.final_image(row))  # a preview of exactly this A
        assert max(Image.open(path).size) <= THUMB_SIDE
    lost = ws.thumbnails.path_of(row_key(rows[0]))
    lost.unlink()
    assert ws.thumbnails.for_row(ws, rows[0]) == lost and lost.is_file()  # remade on first view
    assert ws.check().ok  # previews are not store files: nothing orphaned, nothing missing
