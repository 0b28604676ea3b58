"""`augment` with scores, `score`, `report` and `review --auto`, run the way a user runs them (``cli.main``) on a
small workspace made by a real bulk run (tiny-random at 64 px, tiny-random-clip), checked against direct SQL."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffusemix_core.curation.queries import REPORT_COLUMNS
from diffusemix_core.engine.test_models import UNTRAINED_SCORER_NOTE
from helpers import TINY, run_main, save_tiny_clip

CLASSES = ("golden_retriever", "tabby-cat")
PER_IMAGE = 3
IMAGES = 3 * len(CLASSES)


def rows(ws: Path, query: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(ws / "manifest.sqlite")
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def frame(ws: Path, query: str) -> pd.DataFrame:
    conn = sqlite3.connect(ws / "manifest.sqlite")
    try:
        return pd.read_sql_query(query, conn)
    finally:
        conn.close()


def scores_of(ws: Path, scorer_id: int) -> list[tuple]:
    return rows(ws, "SELECT target, target_id, metric, value, text FROM scores WHERE scorer_id = ? ORDER BY 1, 2, 3",
                [scorer_id])


def copy(ws: Path, tmp_path: Path) -> Path:
    """A private copy of a module workspace for a test that changes it."""
    target = tmp_path / "ws"
    shutil.copytree(ws, target)
    return target


def augmentations(ws: Path, scorer_id: int) -> pd.DataFrame:
    """Every augmentation with its scores, straight from the tables."""
    quality = rows(ws, "SELECT max(id) FROM scorers WHERE kind = 'quality'")[0][0]

    def score(alias: str, target: str, scorer: int, metric: str, column: str = "value") -> str:
        key = "a.id" if target == "augmentation" else "a.generation_id"
        return (f"(SELECT {column} FROM scores WHERE target = '{target}' AND target_id = {key} "
                f"AND scorer_id = {scorer} AND metric = '{metric}') AS {alias}")

    return frame(ws, "SELECT a.id, a.label, a.prompt, a.status, a.drift, " + ", ".join([
        score("prob", "augmentation", scorer_id, "label_prob"), score("rank", "augmentation", scorer_id, "label_rank"),
        score("gprob", "generation", scorer_id, "label_prob"), score("flags", "augmentation", quality, "flags", "text"),
        score("gflags", "generation", quality, "flags", "text")]) + " FROM augmentations a ORDER BY a.id")


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    from diffusemix_core.engine.fractals import FractalLibrary

    root = tmp_path_factory.mktemp("curation")
    FractalLibrary.procedural(3, seed=1, size=64).save(root / "fractals")
    rng = np.random.default_rng(5)
    for c in CLASSES:
        (root / "train" / c).mkdir(parents=True)
        for i in range(IMAGES // len(CLASSES)):
            small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
            Image.fromarray(small).resize((48, 40), Image.BICUBIC).save(root / "train" / c / f"{i}.png")
    return root


def augment_args(train: Path, ws: Path, *extra) -> list:
    return ["augment", "--train-dir", train / "train", "--workspace", ws, "--per-image", PER_IMAGE, "--batch-size",
            2, "--seed", 3, "--fractal-dir", train / "fractals", "--no-progress", *TINY, *extra]


@pytest.fixture(scope="module")
def scored_ws(train, tmp_path_factory):
    ws = tmp_path_factory.mktemp("scored") / "ws"
    code, out, err = run_main(*augment_args(train, ws))
    assert code == 0, err
    return ws, out


@pytest.fixture(scope="module")
def plain_ws(train, tmp_path_factory):
    ws = tmp_path_factory.mktemp("plain") / "ws"
    code, out, err = run_main(*augment_args(train, ws, "--scorer", "none"))
    assert code == 0, err
    return ws, out


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A second CLIP-style scorer: the tiny one, saved the way a downloaded snapshot is laid out."""
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


# ------------------------------------------------------------------------------------------------ augment, score
def test_augment_stores_scores_of_every_image(scored_ws):
    ws, out = scored_ws
    n = IMAGES * PER_IMAGE
    assert rows(ws, "SELECT count(*) FROM augmentations") == [(n,)]
    scorers = rows(ws, "SELECT id, kind, model, is_test_model, settings FROM scorers ORDER BY id")
    assert [s[1:4] for s in scorers] == [("label", "tiny-random-clip", 1), ("quality", "quality", 0)]
    assert json.loads(scorers[0][4])["class_names"] == {"golden_retriever": "golden retriever",
                                                       "tabby-cat": "tabby cat"}
    counts = dict(((t, m), c) for t, m, c in rows(ws, "SELECT target, metric, count(*) FROM scores GROUP BY 1, 2"))
    assert counts == {(t, m): n for t in ("augmentation", "generation")
                      for m in ("label_prob", "label_rank", "top_prob", "flags")}
    assert "scores: label consistency by tiny-random-clip" in out and UNTRAINED_SCORER_NOTE in out
    meta = dict(rows(ws, "SELECT key, value FROM meta"))
    assert json.loads(meta["class_labels"]) == list(CLASSES)


def test_score_fills_a_workspace_made_without_scores_and_then_does_nothing(plain_ws, scored_ws, tmp_path):
    ws = copy(plain_ws[0], tmp_path)
    assert "scores:" not in plain_ws[1] and rows(ws, "SELECT count(*) FROM scores") == [(0,)]
    code, out, _ = run_main("score", "--workspace", ws, "--no-progress", "--batch-size", 7)
    n = IMAGES * PER_IMAGE
    assert code == 0 and f"scored {n} augmentation(s) and {n} generated image(s) with tiny-random-clip (scorer #1)" \
        in out and UNTRAINED_SCORER_NOTE in out
    # the same images, the same scorer: what the bulk run stored
    for scorer_id in (1, 2):
        made_later, made_in_run = scores_of(ws, scorer_id), scores_of(scored_ws[0], scorer_id)
        assert [r[:3] + r[4:] for r in made_later] == [r[:3] + r[4:] for r in made_in_run]
        assert np.allclose([r[3] for r in made_later], [r[3] for r in made_in_run], atol=1e-5)
    before = rows(ws, "SELECT * FROM scores ORDER BY 1, 2, 3, 4")
    code, out, _ = run_main("score", "--workspace", ws, "--no-progress")
    assert code == 0 and out.startswith("nothing to score")
    assert rows(ws, "SELECT * FROM scores ORDER BY 1, 2, 3, 4") == before


def test_a_second_scorer_adds_rows_and_keeps_the_first(scored_ws, clip_folder, tmp_path):
    ws = copy(scored_ws[0], tmp_path)
    first, flags = scores_of(ws, 1), scores_of(ws, 2)
    code, out, _ = run_main("score", "-w", ws, "--scorer", clip_folder, "--no-progress")
    n = IMAGES * PER_IMAGE
    assert code == 0 and f"scored {n} augmentation(s) and {n} generated image(s) with {clip_folder} (scorer #3)" in out
    assert UNTRAINED_SCORER_NOTE not in out  # a folder is the user's model
    assert scores_of(ws, 1) == first and scores_of(ws, 2) == flags  # untouched; the flags were there already
    assert len(scores_of(ws, 3)) == 2 * 3 * n
    # the report reads the latest scorer unless told otherwise
    _, out, _ = run_main("report", "-w", ws)
    assert f"label scores by {clip_folder} (scorer #3)" in out
    _, out, _ = run_main("report", "-w", ws, "--scorer", "tiny-random-clip")
    assert "label scores by tiny-random-clip (scorer #1)" in out and UNTRAINED_SCORER_NOTE in out


def test_a_mapping_file_renames_the_classes_and_is_remembered(plain_ws, tmp_path):
    ws = copy(plain_ws[0], tmp_path)
    mapping = tmp_path / "classes.txt"
    mapping.write_text("golden_retriever dog of gold, goldie\ntabby-cat striped cat\n", encoding="utf-8")
    code, out, _ = run_main("score", "-w", ws, "--class-map", mapping, "--no-progress")
    assert code == 0
    settings = json.loads(rows(ws, "SELECT settings FROM scorers WHERE kind = 'label'")[0][0])
    assert settings["class_names"] == {"golden_retriever": "dog of gold", "tabby-cat": "striped cat"}
    assert {t for t, in rows(ws, "SELECT text FROM scores WHERE metric = 'top_prob'")} <= {"dog of gold",
                                                                                           "striped cat"}
    assert json.loads(dict(rows(ws, "SELECT key, value FROM meta"))["class_map"]) == settings["class_names"]
    code, out, _ = run_main("score", "-w", ws, "--no-progress")  # the remembered mapping: the same scorer
    assert code == 0 and out.startswith("nothing to score")
    mapping.write_text("golden_retriever\n", encoding="utf-8")
    code, _, err = run_main("score", "-w", ws, "--class-map", mapping)
    assert code == 1 and "line 1" in err and "has no name" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ review --auto
def _counts(out: str, title: str) -> dict[str, int]:
    section = out.split(f"by {title}:\n", 1)[1]
    counts = {}
    for line in section.splitlines():
        if not line.startswith("  "):
            break
        n, name = line.split(None, 1)
        counts[name] = int(n)
    return counts


def test_review_auto_dry_run_counts_equal_the_real_run(scored_ws, tmp_path):
    ws = copy(scored_ws[0], tmp_path)
    assert run_main("review", "-w", ws, "--approve", "--ids", "1", "2")[0] == 0  # people's decisions first
    assert run_main("review", "-w", ws, "--reject", "--ids", "3")[0] == 0
    # one A made blank by hand, so that --reject-flagged has something to find
    conn = sqlite3.connect(ws / "manifest.sqlite")
    with conn:
        conn.execute("UPDATE scores SET value = 1, text = 'blank' WHERE target = 'augmentation' AND target_id = 9 "
                     "AND metric = 'flags'")
    conn.close()
    data = augmentations(ws, 1)
    pending = data[data.status == "pending"]
    p = float(pending.prob.quantile(0.3))
    d = float(np.sort(data.drift)[len(data) // 3])
    breaks = pending[(pending.prob < p) | (pending.drift > d) | (pending["flags"] != "") | (pending.gflags != "")]
    assert 0 < len(breaks) < len(pending)
    statuses = rows(ws, "SELECT id, status FROM augmentations ORDER BY id")

    auto = ["review", "-w", ws, "--auto", "--min-label-prob", p, "--max-drift", d, "--reject-flagged"]
    code, dry, _ = run_main(*auto, "--dry-run")
    assert code == 0 and "dry run: nothing changed" in dry and UNTRAINED_SCORER_NOTE in dry
    assert f"would reject {len(breaks)} of {len(pending)} pending augmentation(s) (reject_flagged 1," in dry
    assert rows(ws, "SELECT id, status FROM augmentations ORDER BY id") == statuses
    assert rows(ws, "SELECT count(*) FROM review_batches WHERE origin = 'auto'") == [(0,)]

    code, real, _ = run_main(*auto)
    assert code == 0 and f"{len(breaks)} augmentation(s) rejected" in real
    (batch, origin, note), = rows(ws, "SELECT id, origin, filters FROM review_batches WHERE origin = 'auto'")
    note = json.loads(note)["note"]
    assert note["rule"]["min_label_prob"] == p and note["rule"]["max_drift"] == d and note["rule"]["reject_flagged"]
    assert note["rule"]["scorer"] == {"id": 1, "model": "tiny-random-clip"} and 9 in note["broken"]["reject_flagged"]
    changed = frame(ws, f"SELECT a.label, a.prompt FROM reviews r JOIN augmentations a ON a.id = r.augmentation_id "
                        f"WHERE r.batch_id = {batch} AND r.origin = 'auto' AND r.previous_status = 'pending' "
                        "AND r.status = 'rejected'")
    assert len(changed) == len(breaks)
    for title in ("label", "prompt"):
        assert _counts(dry, title) == _counts(real, title) == changed.groupby(title).size().to_dict()
    assert rows(ws, "SELECT status FROM augmentations WHERE id IN (1, 2, 3) ORDER BY id") == [
        ("approved",), ("approved",), ("rejected",)]  # people's decisions are not judged by rules
    code, out, _ = run_main("review", "-w", ws, "--undo")  # one decision: one undo
    assert code == 0 and f"{len(breaks)} restored" in out
    assert rows(ws, "SELECT id, status FROM augmentations ORDER BY id") == statuses


@pytest.mark.parametrize("args, message", [
    (["--approve", "--min-label-prob", "0.2"], "go with --auto"),
    (["--auto"], "needs a rule"),
    (["--auto", "--min-drift", "0.2"], "not a rule of --auto"),
    (["--auto", "--min-label-prob", "2"], "must be in [0, 1]"),
    (["--auto", "--min-label-prob", "0.2", "--scorer", "other-clip"], "no scores from scorer 'other-clip'"),
])
def test_review_auto_errors_are_one_line(scored_ws, args, message):
    code, _, err = run_main("review", "-w", scored_ws[0], *args)
    assert code == 1 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_review_auto_without_scores_says_what_to_run(plain_ws):
    code, _, err = run_main("review", "-w", plain_ws[0], "--auto", "--reject-flagged", "--dry-run")
    assert code == 1 and "run `python -m diffusemix_core score" in err


# ------------------------------------------------------------------------------------------------ report
def test_report_table_and_csv_match_the_tables(scored_ws, tmp_path):
    ws = copy(scored_ws[0], tmp_path)
    assert run_main("review", "-w", ws, "--approve", "--ids", "1-5")[0] == 0
    assert run_main("review", "-w", ws, "--reject", "--ids", "6-8")[0] == 0
    assert run_main("review", "-w", ws, "--reject", "--ids", "9-12")[0] == 0
    assert run_main("review", "-w", ws, "--undo")[0] == 0  # 9-12 pending again: no verdict
    assert run_main("review", "-w", ws, "--auto", "--max-drift", "0")[0] == 0  # rules' decisions: not counted
    data = augmentations(ws, 1)
    data["verdict"] = data.id.map({**{i: "approved" for i in range(1, 6)}, **{i: "rejected" for i in range(6, 9)}})
    for by_class in (False, True):
        csv_path = tmp_path / f"report-{by_class}.csv"
        code, out, _ = run_main("report", "-w", ws, "--csv", csv_path, *(["--by-class"] if by_class else []))
        assert code == 0 and UNTRAINED_SCORER_NOTE in out
        report = pd.read_csv(csv_path, keep_default_na=False, na_values=[""])
        keys = ["prompt", "label"] if by_class else ["prompt"]
        assert list(report.columns) == [c for c in REPORT_COLUMNS if by_class or c != "label"]
        header = out.splitlines()[2].split()
        assert header == [c for c in REPORT_COLUMNS if c not in ("scorer", "untrained") and (by_class or c != "label")]
        expected = data.groupby(keys).apply(lambda g: pd.Series({
            "count": len(g), "scored": g.prob.notna().sum(), "mean_label_prob": g.prob.mean(),
            "mean_generated_label_prob": g.gprob.mean(), "top1_share": (g["rank"] == 1).mean(),
            "mean_drift": g.drift.mean(), "flagged_share": ((g["flags"] != "") | (g.gflags != "")).mean(),
            "human_approved": (g.verdict == "approved").sum(), "human_rejected": (g.verdict == "rejected").sum(),
        }), include_groups=False).reset_index()
        expected["human_approval_rate"] = (expected.human_approved / (expected.human_approved
                                                                       + expected.human_rejected))
        merged = report.merge(expected, on=keys, suffixes=("", "_sql"))
        assert len(merged) == len(report) == len(expected)
        for column in expected.columns.drop(keys):
            assert np.allclose(merged[column].astype(float), merged[f"{column}_sql"].astype(float), equal_nan=True), \
                column
        assert (report.scorer == "tiny-random-clip").all() and report.untrained.all()
        assert len(out.splitlines()) == 3 + len(report) + 1  # title, note, header, rows, "wrote ..."


def test_report_on_a_workspace_without_scores(plain_ws):
    code, out, _ = run_main("report", "-w", plain_ws[0])
    lines = out.splitlines()
    assert code == 0 and "no label scores yet (run `score`)" in lines[0] and lines[1].split()[:3] == [
        "prompt", "count", "scored"]
    assert len(lines) > 2 and all(re.search(r"\s\d+\s+0\s+-\s+-\s+-\s+\d\.\d{3}\s+-\s", line) for line in lines[2:])


def test_an_unavailable_scorer_is_one_line_and_writes_no_scores(plain_ws):
    ws = plain_ws[0]
    before = rows(ws, "SELECT count(*) FROM scorers"), rows(ws, "SELECT count(*) FROM scores")
    code, _, err = run_main("score", "-w", ws, "--scorer", "nobody/uncached-clip", "--no-progress")
    assert code == 1 and "--scorer tiny-random-clip" in err and len(err.strip().splitlines()) == 1
    assert (rows(ws, "SELECT count(*) FROM scorers"), rows(ws, "SELECT count(*) FROM scores")) == before
