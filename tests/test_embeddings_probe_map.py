"""Embeddings kept once, the probe trained on the user's own images, and the map, driven through the CLI
(``cli.main`` for the set-up, subprocesses for the commands under test) on a small workspace made by a real bulk
run (tiny-random at 64 px, tiny-random-clip), checked against direct SQL."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import TINY, run_cli, run_main

CLASSES = ("golden_retriever", "tabby-cat")
PER_CLASS = 4
PER_IMAGE = 2


def rows(ws: Path, query: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(ws / "manifest.sqlite")
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def copy(ws: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ws"
    shutil.copytree(ws, target)
    return target


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    from diffusemix_core.engine.fractals import FractalLibrary

    root = tmp_path_factory.mktemp("probe")
    FractalLibrary.procedural(2, seed=1, size=64).save(root / "fractals")
    rng = np.random.default_rng(7)
    for k, c in enumerate(CLASSES):
        (root / "train" / c).mkdir(parents=True)
        for i in range(PER_CLASS):
            small = rng.integers(0, 120, (4, 5, 3), dtype=np.uint8) + np.uint8(120 * k)  # two tones: separable
            Image.fromarray(small).resize((48, 40), Image.BICUBIC).save(root / "train" / c / f"{i}.png")
    return root


def augment(train: Path, ws: Path, *extra) -> str:
    code, out, err = run_main("augment", "--train-dir", train / "train", "--workspace", ws, "--per-image", PER_IMAGE,
                              "--batch-size", 4, "--seed", 3, "--fractal-dir", train / "fractals", "--no-progress",
                              *TINY, *extra)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def scored_ws(train, tmp_path_factory):
    ws = tmp_path_factory.mktemp("scored") / "ws"
    augment(train, ws)
    return ws


def embedding_counts(ws: Path) -> dict[str, int]:
    return dict(rows(ws, "SELECT target, count(*) FROM embeddings GROUP BY target"))


# ------------------------------------------------------------------------------------------------ embeddings
def test_a_bulk_run_keeps_the_embeddings_of_every_image(scored_ws):
    n_sources = len(CLASSES) * PER_CLASS
    n = n_sources * PER_IMAGE
    assert embedding_counts(scored_ws) == {"source": n_sources, "generation": n, "augmentation": n}
    (scorer,), = rows(scored_ws, "SELECT DISTINCT scorer_id FROM embeddings")
    assert rows(scored_ws, "SELECT kind FROM scorers WHERE id = ?", [scorer]) == [("label",)]
    dim, blob = rows(scored_ws, "SELECT dim, vector FROM embeddings LIMIT 1")[0]
    assert len(blob) == 2 * dim  # float16
    vector = np.frombuffer(blob, dtype="<f2").astype(np.float32)
    assert abs(np.linalg.norm(vector) - 1) < 1e-2


def test_score_adds_the_embeddings_to_a_workspace_scored_before_without_rescoring(scored_ws, tmp_path):
    ws = copy(scored_ws, tmp_path)
    kept = rows(ws, "SELECT target, target_id, vector FROM embeddings ORDER BY 1, 2")
    conn = sqlite3.connect(ws / "manifest.sqlite")
    with conn:
        conn.execute("DELETE FROM embeddings")  # as a workspace scored before embeddings were kept
    conn.close()
    mine = "SELECT * FROM scores WHERE scorer_id IN (1, 2) ORDER BY 1, 2, 3, 4"  # the label scores and flags
    before = rows(ws, mine)
    done = run_cli("score", "-w", ws, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "kept 40 image embedding(s)" in done.stdout and "(8 source(s))" in done.stdout
    assert rows(ws, mine) == before  # nothing else recomputed (the probe adds its own scorer's rows)
    again = rows(ws, "SELECT target, target_id, vector FROM embeddings ORDER BY 1, 2")
    assert [r[:2] for r in again] == [r[:2] for r in kept]
    for (_, _, a), (_, _, b) in zip(again, kept):  # the same vectors as the bulk run's (float16 rounding)
        assert np.allclose(np.frombuffer(a, "<f2"), np.frombuffer(b, "<f2"), atol=2e-3)
    code, out, _ = run_main("score", "-w", ws, "--no-progress")
    assert code == 0 and out.startswith("nothing to score") and "kept" not in out and "up to date" in out


# ------------------------------------------------------------------------------------------------ the probe
@pytest.fixture(scope="module")
def probed_ws(scored_ws, tmp_path_factory):
    ws = copy(scored_ws, tmp_path_factory.mktemp("probed"))
    done = run_cli("score", "-w", ws, "--no-progress")
    assert done.returncode == 0, done.stderr
    return ws, done.stdout


def test_score_trains_the_cross_validated_probe_and_stores_its_scores(probed_ws):
    ws, out = probed_ws
    assert "probe (#3): logistic regression on 8 labelled source(s) of 2 classes, 4-fold cross-validated" in out
    n = len(CLASSES) * PER_CLASS * PER_IMAGE
    counts = dict(((t, m), c) for t, m, c in rows(
        ws, "SELECT target, metric, count(*) FROM scores WHERE scorer_id = 3 GROUP BY 1, 2"))
    assert counts == {(t, m): n for t in ("augmentation", "generation") for m in ("probe_prob", "probe_low")}
    # probe_low is exactly "below the class's threshold", the threshold kept with it
    for prob, low, threshold in rows(ws, "SELECT p.value, l.value, l.text FROM scores p JOIN scores l ON "
                                         "l.target = p.target AND l.target_id = p.target_id AND l.scorer_id = 3 AND "
                                         "l.metric = 'probe_low' WHERE p.scorer_id = 3 AND p.metric = 'probe_prob'"):
        assert 0 <= prob <= 1 and low == float(prob < float(threshold))
    # the two tones are separable: the probe knows the classes the zero-shot test scorer does not
    assert "source accuracy 1.00" in out
    again = run_cli("score", "-w", ws, "--no-progress")
    assert "probe (#3) up to date" in again.stdout


def test_probe_scores_drive_filters_auto_review_and_the_reports(probed_ws, tmp_path):
    ws = copy(probed_ws[0], tmp_path)
    low = rows(ws, "SELECT count(*) FROM scores WHERE scorer_id = 3 AND target = 'augmentation' "
                   "AND metric = 'probe_low' AND value = 1")[0][0]
    done = run_cli("review", "-w", ws, "--auto", "--reject-probe-low", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"would reject {low} of 16 pending" in done.stdout
    done = run_cli("review", "-w", ws, "--auto", "--min-probe-prob", "1.0")
    assert done.returncode == 0 and "rejecting 16 of 16 pending" in done.stdout
    report = run_cli("report", "-w", ws, "--probe", "--csv", tmp_path / "probe.csv")
    assert report.returncode == 0, report.stderr
    assert "probe report of" in report.stdout and "golden_retriever" in report.stdout
    import csv
    with open(tmp_path / "probe.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["label"] for r in table] == list(CLASSES) and all(r["sources"] == str(PER_CLASS) for r in table)
    assert all(float(r["probe_accuracy"]) == 1.0 for r in table)
    prompt = run_cli("report", "-w", ws, "--csv", tmp_path / "prompts.csv")
    assert prompt.returncode == 0 and "mean_probe_prob" in prompt.stdout


def test_one_class_skips_the_probe_with_a_reason(train, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(train / "train" / CLASSES[0], one / "train" / CLASSES[0])
    shutil.copytree(train / "fractals", one / "fractals")
    ws = tmp_path / "ws"
    augment(one, ws, "--scorer", "none")
    done = run_cli("score", "-w", ws, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "probe skipped: the workspace has one class (golden_retriever)" in done.stdout
    done = run_cli("review", "-w", ws, "--auto", "--reject-probe-low")
    assert done.returncode == 1 and "need the probe's scores" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------------------ the map
def test_map_png_and_review_in_box_act_on_the_same_coordinates(probed_ws, tmp_path):
    ws = copy(probed_ws[0], tmp_path)
    done = run_cli("map", "-w", ws, "--out", tmp_path / "map.png", "--color", "probe_prob")
    assert done.returncode == 0, done.stderr
    assert "16 augmentation(s) coloured by probe_prob" in done.stdout and "projected now" in done.stdout
    assert Image.open(tmp_path / "map.png").size[0] > 300
    points = rows(ws, "SELECT augmentation_id, x, y FROM map_points ORDER BY augmentation_id")
    assert len(points) == 16
    again = run_cli("map", "-w", ws, "--out", tmp_path / "map2.png")
    assert "cached map" in again.stdout
    assert rows(ws, "SELECT augmentation_id, x, y FROM map_points ORDER BY augmentation_id") == points
    xs = sorted(p[1] for p in points)
    box = f"{xs[0] - 1},-1000,{(xs[7] + xs[8]) / 2},1000"  # the left half of the map
    left = sorted(p[0] for p in points if p[1] <= (xs[7] + xs[8]) / 2)
    dry = run_cli("review", "-w", ws, "--reject", f"--in-box={box}", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{len(left)} augmentation(s) in the box" in dry.stdout and "nothing changed" in dry.stdout
    assert rows(ws, "SELECT count(*) FROM augmentations WHERE status != 'pending'") == [(0,)]
    done = run_cli("review", "-w", ws, "--reject", f"--in-box={box}")
    assert done.returncode == 0, done.stderr
    assert [r[0] for r in rows(ws, "SELECT id FROM augmentations WHERE status = 'rejected' ORDER BY id")] == left
    assert run_cli("review", "-w", ws, "--undo").returncode == 0
    assert rows(ws, "SELECT count(*) FROM augmentations WHERE status != 'pending'") == [(0,)]
    bad = run_cli("review", "-w", ws, "--reject", "--in-box", "1,2,3")
    assert bad.returncode != 0 and "x0,y0,x1,y1" in bad.stderr


# ------------------------------------------------------------------------------------------------ export
def test_export_metadata_carries_every_score_and_flag(probed_ws, tmp_path):
    import csv

    ws = copy(probed_ws[0], tmp_path)
    done = run_cli("export", "-w", ws, "--to", tmp_path / "out", "--status", "all", "--include-originals")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out" / "metadata.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    augmented = [r for r in table if r["kind"] == "augmented"]
    assert len(augmented) == 16
    for column in ("label_prob", "label_rank", "top_prob", "top_class", "flags", "probe_prob", "probe_class",
                   "probe_low", "generated_label_prob", "generated_flags", "generated_probe_prob"):
        assert column in table[0], column
    for r in augmented:
        aug_id = int(r["augmentation_id"])
        (prob,), = rows(ws, "SELECT value FROM scores WHERE target = 'augmentation' AND target_id = ? AND "
                            "metric = 'label_prob' AND scorer_id = 1", [aug_id])
        (probe,), = rows(ws, "SELECT value FROM scores WHERE target = 'augmentation' AND target_id = ? AND "
                             "metric = 'probe_prob' AND scorer_id = 3", [aug_id])
        assert float(r["label_prob"]) == pytest.approx(prob) and float(r["probe_prob"]) == pytest.approx(probe)
    assert all(r["label_prob"] == "" for r in table if r["kind"] == "original")
