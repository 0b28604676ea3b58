"""Curation scores in the workspace (curation.scores, curation.score_workspace, bulk.score_stage): the bulk-run
stage, near-duplicates across runs, the score loop, the filter/sort query, the rules of review --auto and the prompt
report, against direct SQL."""

from __future__ import annotations

import logging
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffusemix_core.bulk import score_stage
from diffusemix_core.bulk.options import AugmentOptions
from diffusemix_core.curation import queries as score_queries, scores
from diffusemix_core.curation.score_workspace import score_workspace
from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.errors import BadArgumentError, ModelUnavailableError
from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.generation import GenerationResult, GenerationSettings
from diffusemix_core.engine.test_models import TEST_SCORERS
from diffusemix_core.curation.label_scorer import DEFAULT_SCORER
from diffusemix_core.workspace.folder import Workspace

FRACTALS = FractalLibrary.procedural(3, seed=0, size=32)
CLASSES = ("golden_retriever", "tabby-cat")


class EchoGenerator:
    """A do-nothing edit: Î = I for every prompt, so the Î of one source are near-duplicates of each other."""

    settings = GenerationSettings(model="tiny-random", resolution=64, steps=2, device="cpu")

    def load(self) -> None:
        pass

    def generate(self, requests, **kwargs):
        return [GenerationResult(image=r.image.copy(), used_seed=r.seed, retries=0) for r in requests]


def write_train(root: Path) -> Path:
    """Two classes; the first image of each is uniform grey (a blank Î), the others smooth noise."""
    rng = np.random.default_rng(0)
    for k, c in enumerate(CLASSES):
        (root / c).mkdir(parents=True)
        Image.fromarray(np.full((32, 40, 3), 100 + 28 * k, np.uint8)).save(root / c / "0 grey.png")
        for i in (1, 2):
            small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
            Image.fromarray(small).resize((40, 32), Image.BICUBIC).save(root / c / f"{i}.png")
    return root


def sql(ws: Workspace, query: str, params=()) -> list[tuple]:
    with ws.manifest.session() as db:
        return db.execute(query, params).fetchall()


def frame(ws: Workspace, query: str, params=()) -> pd.DataFrame:
    conn = sqlite3.connect(ws.db_path)
    try:
        return pd.read_sql_query(query, conn, params=params)
    finally:
        conn.close()


def augment(ws: Workspace, train: Path, per_image: int, scorer="auto", threads=None):
    options = AugmentOptions(per_image=per_image, batch_size=2, seed=1, scorer=scorer, threads=threads)
    return run_augment(ws, train, options, generator=EchoGenerator(), fractals=FRACTALS)


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    return write_train(tmp_path_factory.mktemp("scores") / "train")


@pytest.fixture(scope="module")
def scored(train, tmp_path_factory):
    """per_image 2, then 3 (a resumed run: the third Î is judged against the first two, read from the store)."""
    ws = Workspace(tmp_path_factory.mktemp("scored") / "ws")
    first = augment(ws, train, 2)
    second = augment(ws, train, 3, threads=1)
    return ws, first, second


# ------------------------------------------------------------------------------------------------ the stage
def test_bulk_run_scores_every_image_and_flags_near_duplicates_across_runs(scored):
    ws, first, second = scored
    assert first.scorer == second.scorer == TEST_SCORERS[0]  # auto, for a test generator model
    n_aug = sql(ws, "SELECT count(*) FROM augmentations")[0][0]
    assert n_aug == 6 * 3
    (label_id, model, test), = sql(ws, "SELECT id, model, is_test_model FROM scorers WHERE kind = 'label'")
    assert (model, test) == (TEST_SCORERS[0], 1)
    per_metric = dict(sql(ws, "SELECT target || ':' || metric, count(*) FROM scores GROUP BY 1"))
    assert per_metric == {f"{t}:{m}": n_aug for t in ("augmentation", "generation")
                          for m in ("label_prob", "label_rank", "top_prob", "flags")}
    probs = sql(ws, "SELECT value FROM scores WHERE metric = 'label_prob'")
    assert all(0 < p < 1 for p, in probs)
    assert {r for r, in sql(ws, "SELECT value FROM scores WHERE metric = 'label_rank'")} <= {1.0, 2.0}
    assert {t for t, in sql(ws, "SELECT text FROM scores WHERE metric = 'top_prob'")} <= {"golden retriever",
                                                                                          "tabby cat"}
    # Î = I: in each source the first Î (by id) is clean, the others are its near-duplicates, including the one
    # made by the second run; the grey source's Î are also blank
    flags = sql(ws, "SELECT g.source_id, g.id, s.path, x.text FROM scores x JOIN generations g ON g.id = x.target_id "
                    "JOIN sources s ON s.id = g.source_id WHERE x.target = 'generation' AND x.metric = 'flags' "
                    "ORDER BY g.source_id, g.id")
    for source_id in {r[0] for r in flags}:
        mine = [r for r in flags if r[0] == source_id]
        blank = ["blank"] if "grey" in mine[0][2] else []
        assert [r[3] for r in mine] == [",".join(blank)] + [",".join(blank + ["near_duplicate"])] * 2
    # A keeps half of I, and the fractal is blended in: not blank
    assert {t for t, in sql(ws, "SELECT text FROM scores WHERE target = 'augmentation' AND metric = 'flags'")} == {""}


def test_scoring_later_gives_what_the_run_stored(scored, train, tmp_path):
    ws, _, _ = scored
    later = Workspace(tmp_path / "later")
    augment(later, train, 2, scorer=None)
    augment(later, train, 3, scorer="none")
    assert sql(later, "SELECT count(*) FROM scores") == [(0,)]
    steps = []
    summary = score_workspace(later, batch_size=5, progress=lambda done, total: steps.append((done, total)))
    assert (summary.scorer, summary.augmentations, summary.generations) == (TEST_SCORERS[0], 18, 18)
    assert steps[0] == (0, 36) and steps[-1] == (36, 36) and len(steps) > 3  # in batches
    query = ("SELECT s.path, a.job_key, x.target, x.metric, x.value, x.text FROM scores x "
             "JOIN augmentations a ON (x.target = 'augmentation' AND a.id = x.target_id) "
             "OR (x.target = 'generation' AND a.generation_id = x.target_id) JOIN sources s ON s.id = a.source_id "
             "WHERE x.metric NOT LIKE 'probe%'")  # the probe is trained by `score` over the whole set (probe.py)
    run = {r[:4]: r[4:] for r in sql(ws, query)}
    after = {r[:4]: r[4:] for r in sql(later, query)}
    assert run.keys() == after.keys()
    for key, (value, text) in run.items():
        assert after[key][0] == pytest.approx(value, abs=1e-5) and after[key][1] == text, key
    again = score_workspace(later)
    assert (again.augmentations, again.generations) == (0, 0)


class ArraylessScore(score_stage.Score):
    """The stage as the Ray engine runs it: the batch travels back to the commit without Î's array."""

    def __call__(self, batch):
        batch = super().__call__(batch)
        for source in batch.sources:
            for slot in source.slots:
                slot.generated = None
        return batch


def test_scores_of_a_batch_that_comes_back_without_arrays_are_the_same(scored, train, tmp_path):
    ws, _, _ = scored
    other = Workspace(tmp_path / "other")
    names = {"golden_retriever": "golden retriever", "tabby-cat": "tabby cat"}
    augment(other, train, 2, scorer=ArraylessScore("tiny-random-clip", class_names=names))
    augment(other, train, 3, scorer=ArraylessScore("tiny-random-clip", class_names=names))
    query = "SELECT target, target_id, metric, text FROM scores ORDER BY 1, 2, 3"
    assert sql(other, query) == sql(ws, query)


def test_score_stage_is_a_plain_picklable_callable(scored):
    ws, _, _ = scored
    stage = score_stage.score_stage(ws, "tiny-random-clip", load=True)
    assert stage.class_names == {"golden_retriever": "golden retriever", "tabby-cat": "tabby cat"}
    copy = pickle.loads(pickle.dumps(stage))
    assert copy.settings() == stage.settings() and copy._scorer is None  # the model never travels
    assert score_stage.Score(**stage.settings()).label_spec.key == stage.label_spec.key
    assert len(pickle.dumps(stage)) < 5_000


def test_scorer_choice(scored, monkeypatch, caplog):
    ws, _, _ = scored
    assert scores.resolve_scorer("auto", generator_model="tiny-random") == TEST_SCORERS[0]
    assert scores.resolve_scorer("auto", generator_model="timbrooks/instruct-pix2pix") == DEFAULT_SCORER
    assert scores.resolve_scorer("auto", workspace=ws) == TEST_SCORERS[0]  # judged from the generations
    assert scores.resolve_scorer("none") is None and scores.resolve_scorer(None) is None
    assert score_stage.score_stage(ws, "none") is None
    # auto with a real generator and the default scorer not available offline: flags only, with a warning
    monkeypatch.setattr(scores, "DEFAULT_SCORER", "nobody/uncached-clip")
    with caplog.at_level(logging.WARNING):
        stage = score_stage.score_stage(ws, "auto", generator_model="timbrooks/instruct-pix2pix")
    assert stage.model is None and "label scores skipped" in caplog.text
    with pytest.raises(ModelUnavailableError):
        score_stage.score_stage(ws, "nobody/uncached-clip")


def test_class_names_are_remembered(tmp_path):
    ws = Workspace(tmp_path / "ws")
    assert scores.workspace_class_names(ws, ["n01440764", "sea-lion"]) == {"n01440764": "n01440764",
                                                                          "sea-lion": "sea lion"}
    mapping = tmp_path / "map.txt"
    mapping.write_text("n01440764 tench, Tinca tinca\n", encoding="utf-8")
    assert scores.workspace_class_names(ws, [], mapping) == {"n01440764": "tench", "sea-lion": "sea lion"}
    assert scores.workspace_class_names(ws) == {"n01440764": "tench", "sea-lion": "sea lion"}  # both remembered
    with pytest.raises(BadArgumentError, match="does not exist"):
        scores.workspace_class_names(ws, [], tmp_path / "missing.txt")


# ------------------------------------------------------------------------------------------------ queries
def _expected(ws: Workspace, label_id: int) -> pd.DataFrame:
    def metric(alias, target, scorer, name, column="value"):
        key = "a.id" if target == "augmentation" else "a.generation_id"
        return (f"(SELECT {column} FROM scores WHERE target = '{target}' AND target_id = {key} AND scorer_id = "
                f"{scorer} AND metric = '{name}') AS {alias}")

    quality_id = sql(ws, "SELECT max(id) FROM scorers WHERE kind = 'quality'")[0][0]
    return frame(ws, "SELECT a.id, a.label, a.prompt, a.status, a.drift, "
                     + ", ".join([metric("label_prob", "augmentation", label_id, "label_prob"),
                                  metric("generated_label_prob", "generation", label_id, "label_prob"),
                                  metric("label_rank", "augmentation", label_id, "label_rank"),
                                  metric("flags", "augmentation", quality_id, "flags", "text"),
                                  metric("generated_flags", "generation", quality_id, "flags", "text")])
                     + " FROM augmentations a ORDER BY a.id")


def test_scored_augmentations_filters_and_sorts_like_sql(scored):
    ws, _, _ = scored
    label_id = sql(ws, "SELECT max(id) FROM scorers WHERE kind = 'label'")[0][0]
    expected = _expected(ws, label_id)
    rows = score_queries.scored_augmentations(ws)
    assert list(rows[0]) == list(score_queries.SCORED_COLUMNS)
    got = pd.DataFrame(rows)
    for column in ("id", "label_prob", "generated_label_prob", "label_rank", "flags", "generated_flags"):
        assert got[column].tolist() == expected[column].tolist(), column
    assert got["flagged"].tolist() == [int(bool(a or b)) for a, b in zip(expected["flags"], expected.generated_flags)]
    assert got["untrained"].tolist() == [1] * len(got)  # tiny-random-clip: say so wherever its scores are shown

    worst = score_queries.scored_augmentations(ws, order="label_prob", limit=4, offset=1)
    assert [r["id"] for r in worst] == expected.sort_values(["label_prob", "id"]).id.tolist()[1:5]
    cut = float(expected.label_prob.median())
    low = score_queries.scored_augmentations(ws, max_label_prob=cut, label="tabby-cat", flagged=True, order="drift")
    want = expected[(expected.label_prob <= cut) & (expected.label == "tabby-cat")
                    & ((expected["flags"] != "") | (expected.generated_flags != ""))]
    assert sorted(r["id"] for r in low) == sorted(want.id) and low
    clean_page = score_queries.scored_augmentations(ws, flagged=False, min_label_prob=cut, order="generated_label_prob",
                                             limit=50)
    want = expected[(expected.label_prob >= cut) & (expected["flags"] == "") & (expected.generated_flags == "")]
    assert [r["id"] for r in clean_page] == want.sort_values(["generated_label_prob", "id"]).id.tolist()
    with pytest.raises(BadArgumentError, match="no scores from scorer 'other-clip'.*tiny-random-clip"):
        score_queries.scored_augmentations(ws, scorer="other-clip")
    with pytest.raises(BadArgumentError, match="order must be"):
        score_queries.scored_augmentations(ws, order="prompt")


def test_a_page_is_found_through_the_primary_key(scored):
    """Every score join is one primary-key seek; a page's ids are found with only the joins it needs."""
    ws, _, _ = scored
    columns, joins = score_queries._scored_sql(1, 2)
    with ws.manifest.session() as db:
        plan = [r[3] for r in db.execute("EXPLAIN QUERY PLAN SELECT a.id" + joins + " ORDER BY pa.value LIMIT 5")]
        full = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + columns + joins)]
    assert sum("scores" in p or p.startswith("SEARCH pa") for p in plan) == 1
    assert sum("USING PRIMARY KEY (target=? AND target_id=? AND scorer_id=? AND metric=?)" in p for p in full) == 10  # 8 + the probe's 2


# ------------------------------------------------------------------------------------------------ rules, report
def test_auto_review_rejects_pending_rule_breakers_and_keeps_decisions(scored, tmp_path, train):
    ws = Workspace(tmp_path / "ws")
    augment(ws, train, 3)
    ws.review("approved", origin="cli", ids=[1, 2])  # a person's decisions: never judged by a rule
    expected = _expected(ws, 1)
    p = float(expected.label_prob.median())
    rules = score_queries.AutoRules(min_label_prob=p, reject_flagged=True)
    plan = score_queries.auto_review_plan(ws, rules)
    pending = expected[expected.status == "pending"]
    breaks = pending[(pending.label_prob < p) | (pending["flags"] != "") | (pending.generated_flags != "")]
    assert sorted(plan.ids) == sorted(breaks.id) and plan.pending == len(pending) and 0 < len(breaks)
    assert plan.by_rule()["reject_flagged"] == sum((pending["flags"] != "") | (pending.generated_flags != ""))
    assert plan.counts("label") == breaks.groupby("label").size().to_dict()
    decision = score_queries.apply_auto_review(ws, plan)
    assert decision.changed == len(breaks)
    (origin, note), = sql(ws, "SELECT origin, filters FROM review_batches WHERE id = ?", [decision.batch_id])
    assert origin == "auto" and '"min_label_prob": ' + repr(p) in note and '"reject_flagged": true' in note
    assert sql(ws, "SELECT status FROM augmentations WHERE id IN (1, 2)") == [("approved",), ("approved",)]
    assert score_queries.auto_review_plan(ws, rules).ids == []  # nothing pending breaks a rule any more
    with pytest.raises(BadArgumentError, match="needs a rule"):
        score_queries.auto_review_plan(ws, score_queries.AutoRules())


def test_prompt_report_counts_people_not_rules(tmp_path, train):
    ws = Workspace(tmp_path / "ws")
    augment(ws, train, 3)
    ws.review("approved", origin="cli", ids=[1, 2, 3])
    ws.review("rejected", origin="app", ids=[4])
    ws.review("rejected", origin="app", ids=[5, 6])
    ws.undo_last_review(origin="app")  # 5 and 6 are pending again: no verdict
    ws.review("rejected", origin="auto", ids=[7, 8], note={"rule": "test"})  # a rule: not counted
    rows = {r["prompt"]: r for r in score_queries.prompt_report(ws)}
    expected = _expected(ws, 1)
    verdict = {1: "approved", 2: "approved", 3: "approved", 4: "rejected"}
    for prompt, group in expected.groupby("prompt"):
        row = rows[prompt]
        approved = sum(verdict.get(i) == "approved" for i in group.id)
        rejected = sum(verdict.get(i) == "rejected" for i in group.id)
        assert row["count"] == len(group) and row["label"] is None
        assert row["mean_label_prob"] == pytest.approx(group.label_prob.mean())
        assert row["mean_generated_label_prob"] == pytest.approx(group.generated_label_prob.mean())
        assert row["top1_share"] == pytest.approx((group.label_rank == 1).mean())
        assert row["flagged_share"] == pytest.approx(((group["flags"] != "") | (group.generated_flags != "")).mean())
        assert (row["human_approved"], row["human_rejected"]) == (approved, rejected)
        assert row["human_approval_rate"] == (approved / (approved + rejected) if approved + rejected else None)
        assert row["untrained"] is True and row["scorer"] == TEST_SCORERS[0]
    by_class = score_queries.prompt_report(ws, by_class=True)
    assert sum(r["count"] for r in by_class) == len(expected)
    assert {(r["prompt"], r["label"]) for r in by_class} == set(zip(expected.prompt, expected.label))


def test_the_docs_example_runs_as_written(scored, monkeypatch, tmp_path):
    import shutil

    text = (Path(__file__).resolve().parents[1] / "docs" / "workspace.md").read_text(encoding="utf-8")
    section = text.split("\n## Scores:", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    shutil.copytree(scored[0].path, tmp_path / "ws")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "docs/workspace.md", "exec"), namespace)
    assert namespace["rows"] and len(namespace["worst"]) == 18 and namespace["summary"].augmentations == 0
