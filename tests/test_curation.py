"""Curating page by page (diffusemix_core.curation: filters, page, selection, histogram, decision_plans, detail,
report_view), without a browser: queries, pages, the selection, histograms, thresholds, two-step bulk decisions, the
detail of one item and the prompt report, on a workspace made by a real bulk run (tiny-random at 64 px, scored by
tiny-random-clip), checked against the tables read directly."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.curation import decision_plans, detail as details, filters as query_filters
from diffusemix_core.curation import histogram as histograms, page as pages, previews, queries as score_queries
from diffusemix_core.curation import report_view as report_views
from diffusemix_core.curation.filters import CurationQuery
from diffusemix_core.curation.selection import Selection
from diffusemix_core.bulk.options import AugmentOptions
from diffusemix_core.errors import BadArgumentError, WorkspaceError
from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.test_models import UNTRAINED_SCORER_NOTE
from diffusemix_core.workspace.folder import Workspace

CLASSES = ("cats", "dogs", "tabby-cat")
IMAGES_PER_CLASS = 4
PER_IMAGE = 2
N = len(CLASSES) * IMAGES_PER_CLASS * PER_IMAGE  # 24 augmentations


def make_train(root: Path) -> Path:
    rng = np.random.default_rng(5)
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(IMAGES_PER_CLASS):
            small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
            Image.fromarray(small).resize((40, 32), Image.BICUBIC).save(root / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def scored_ws(tmp_path_factory, tiny_generator) -> Path:
    """12 images x 2 through the real bulk run, scored by the untrained tiny CLIP; one pending item rejected and
    one approved by people, so the statuses differ."""
    root = tmp_path_factory.mktemp("curation")
    ws = Workspace(root / "ws")
    summary = run_augment(ws, make_train(root / "train"),
                          AugmentOptions(per_image=PER_IMAGE, batch_size=4, seed=1, scorer="tiny-random-clip"),
                          generator=tiny_generator, fractals=FractalLibrary.procedural(3, seed=1, size=64))
    assert summary.augmentations_added == N
    ws.review("rejected", ids=[2], origin="app")
    ws.review("approved", ids=[5], origin="cli")
    return ws.path


@pytest.fixture
def ws(scored_ws) -> Workspace:
    return Workspace(scored_ws)


@pytest.fixture
def own_ws(scored_ws, tmp_path) -> Workspace:
    """A private copy for a test that changes it."""
    shutil.copytree(scored_ws, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def table(ws: Workspace) -> pd.DataFrame:
    """Every augmentation with its scores (latest scorers), straight from the tables."""
    conn = sqlite3.connect(ws.db_path)
    try:
        label_id, quality_id = (conn.execute(f"SELECT max(id) FROM scorers WHERE kind = '{k}'").fetchone()[0]
                                for k in ("label", "quality"))

        def score(alias, target, scorer, metric, column="value"):
            key = "a.id" if target == "augmentation" else "a.generation_id"
            return (f"(SELECT {column} FROM scores WHERE target = '{target}' AND target_id = {key} "
                    f"AND scorer_id = {scorer} AND metric = '{metric}') AS {alias}")

        return pd.read_sql_query("SELECT a.id, a.label, a.prompt, a.status, a.drift, " + ", ".join([
            score("label_prob", "augmentation", label_id, "label_prob"),
            score("generated_label_prob", "generation", label_id, "label_prob"),
            score("flags", "augmentation", quality_id, "flags", "text"),
            score("generated_flags", "generation", quality_id, "flags", "text"),
            score("nflags", "augmentation", quality_id, "flags"),
            score("ngflags", "generation", quality_id, "flags")]) + " FROM augmentations a ORDER BY a.id", conn)
    finally:
        conn.close()


def expected_ids(frame: pd.DataFrame, query: CurationQuery) -> list[int]:
    """What a query should give, computed with pandas from the tables."""
    f = frame
    for column in ("label", "prompt", "status"):
        if getattr(query, column) is not None:
            f = f[f[column] == getattr(query, column)]
    if query.flagged is not None:
        f = f[((f.nflags.fillna(0) + f.ngflags.fillna(0)) > 0) == query.flagged]
    if query.min_label_prob is not None:
        f = f[f.label_prob >= query.min_label_prob]
    if query.max_label_prob is not None:
        f = f[f.label_prob <= query.max_label_prob]
    if query.min_drift is not None:
        f = f[f.drift >= query.min_drift]
    if query.max_drift is not None:
        f = f[f.drift <= query.max_drift]
    f = f.assign(neg_drift=-f.drift, neg_flags=-(f.nflags.fillna(0) + f.ngflags.fillna(0)), neg_id=-f.id)
    by = {"newest": ["neg_id"], "oldest": ["id"], "drift": ["neg_drift", "id"], "label_prob": ["label_prob", "id"],
          "generated_label_prob": ["generated_label_prob", "id"], "flags": ["neg_flags", "id"],
          "label": ["label", "id"], "prompt": ["prompt", "id"], "status": ["status", "id"]}[query.sort]
    return f.sort_values(by, kind="stable")["id"].astype(int).tolist()


QUERIES = [
    CurationQuery(),
    CurationQuery(status="pending", sort="label_prob"),
    CurationQuery(label="dogs", sort="drift"),
    CurationQuery(prompt="snowy", sort="oldest"),
    CurationQuery(min_label_prob=0.3, max_label_prob=0.9, sort="generated_label_prob"),
    CurationQuery(min_drift=0.5, max_drift=0.97, sort="prompt"),
    CurationQuery(flagged=False, sort="label"),
    CurationQuery(flagged=True, sort="status"),
    CurationQuery(status="rejected", sort="flags"),
]


# ------------------------------------------------------------------------------------------------ pages
@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q.describe() + " / " + q.sort)
def test_pages_match_the_tables(ws, query):
    frame = table(ws)
    expected = expected_ids(frame, query)
    got, number = [], 0
    while True:
        page = pages.page(ws, query, number, per_page=5)
        assert page.total == len(expected) and page.pages == max(1, -(-len(expected) // 5))
        got += page.ids
        number += 1
        if number >= page.pages:
            break
    assert got == expected  # every match once, in order, page after page
    assert query_filters.matching_ids(ws, query) == expected


def test_every_sort_is_known_and_a_bad_one_is_refused():
    assert set(query_filters.SORTS) == {"newest", "oldest", "drift", "label_prob", "generated_label_prob", "flags",
                                   "label", "prompt", "status", "probe_prob"}
    with pytest.raises(BadArgumentError, match="sort must be one of"):
        CurationQuery(sort="random")
    with pytest.raises(BadArgumentError, match=r"in \[0, 1\]"):
        CurationQuery(min_drift=2)


def test_a_page_past_the_end_is_the_last_and_an_empty_filter_says_so(ws):
    last = pages.page(ws, CurationQuery(), 99, per_page=10)
    assert last.number == 2 and len(last.rows) == N - 20 and last.describe().startswith(f"Items 21–{N} of {N}")
    none = pages.page(ws, CurationQuery(label="no such class"), 0)
    assert none.total == 0 and none.rows == [] and none.describe().startswith("Nothing matches (label no such")


def test_rows_thumbnails_captions_and_table_describe_the_same_items(ws):
    page = pages.page(ws, CurationQuery(sort="label_prob"), 0, per_page=6)
    frame = table(ws).set_index("id")
    assert [set(r) for r in page.rows] == [set(score_queries.SCORED_COLUMNS)] * 6
    for row, thumb, text, line in zip(page.rows, page.thumbnails, page.captions(), page.table()):
        assert thumb.is_file() and thumb.is_relative_to(ws.path / "cache" / "thumbs")
        assert row["label_prob"] == pytest.approx(frame.loc[row["id"], "label_prob"])
        # the caption carries the scores, so sorting by one shows it
        assert text.startswith(f"#{row['id']} {row['status']} · p {row['label_prob']:.2f}*")
        assert f"drift {row['drift']:.2f}" in text and text.endswith(f"{row['label']} · {row['prompt']}")
        assert line[:3] == ["", row["id"], row["status"]] and line[5] == f"{row['label_prob']:.3f}"
    assert UNTRAINED_SCORER_NOTE in page.describe() and "tiny-random-clip" in page.describe()


def test_previews_are_made_for_the_page_only(own_ws):
    shutil.rmtree(own_ws.path / "cache")  # a workspace whose previews were deleted: made again on first view
    page = pages.page(own_ws, CurationQuery(sort="drift"), 1, per_page=4)
    made = sorted((own_ws.path / "cache" / "thumbs").rglob("*.png"))
    assert sorted(page.thumbnails) == made and len(made) == 4
    with Image.open(made[0]) as preview:
        assert max(preview.size) <= 192


def test_served_copies_are_made_once_and_selected_ones_are_marked(ws, tmp_path):
    page = pages.page(ws, CurationQuery(), 0, per_page=3)
    served = previews.served_copies(page.thumbnails, tmp_path / "served", [False, True, False])
    assert [Path(p).parent for p in served] == [tmp_path / "served"] * 3
    assert Path(served[0]).read_bytes() == page.thumbnails[0].read_bytes()
    marked = np.asarray(Image.open(served[1]).convert("RGB"))
    plain = np.asarray(Image.open(page.thumbnails[1]).convert("RGB"))
    assert marked.shape == plain.shape and (marked[0, 0] == previews.SELECTED_COLOUR).all()
    stamp = Path(served[1]).stat().st_mtime_ns
    assert previews.served_copies(page.thumbnails[1:2], tmp_path / "served", [True]) == served[1:2]
    assert Path(served[1]).stat().st_mtime_ns == stamp  # not made again
    assert not list((tmp_path / "served").glob(".tmp-*"))


# ------------------------------------------------------------------------------------------------ selection
def test_selection_is_a_value_with_explicit_changes():
    empty = Selection()
    one = empty.add(3)
    assert len(empty) == 0 and list(one) == [3]  # adding returns a new selection
    three = one.add(7, 5)
    assert list(three) == [3, 5, 7] and 5 in three and 4 not in three
    assert list(three.remove(5)) == [3, 7] and list(three.remove(99)) == [3, 5, 7]
    assert list(three.toggle(5)) == [3, 7] and list(three.toggle(9)) == [3, 5, 7, 9]
    assert len(three.clear()) == 0 and three.describe() == "3 selected: #3, #5, #7."
    assert empty.describe() == "Nothing selected."
    assert Selection().add(*range(1, 30)).describe().endswith("… 17 more.")


def test_captions_and_table_mark_the_selected(ws):
    page = pages.page(ws, CurationQuery(), 0, per_page=4)
    selection = Selection().add(page.ids[1])
    assert [c.startswith("✓ ") for c in page.captions(selection)] == [False, True, False, False]
    assert [line[0] for line in page.table(selection)] == ["", "✓", "", ""]


def test_form_values_become_a_query():
    query = CurationQuery.from_form("all", "snowy", "pending", "flagged", "drift", 0, 1, 0.2, 1)
    assert query == CurationQuery(prompt="snowy", status="pending", flagged=True, min_drift=0.2, sort="drift")
    assert CurationQuery.from_form() == CurationQuery()  # the full range of a score filters nothing
    assert query.describe() == "prompt snowy, status pending, flagged, drift in [0.20, 1.00]"
    with pytest.raises(BadArgumentError, match="flags must be one of"):
        CurationQuery.from_form(flags="maybe")


# ------------------------------------------------------------------------------------------------ distribution
@pytest.mark.parametrize("score", list(histograms.HISTOGRAM_SCORES))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.55, 1.0])
def test_histogram_and_threshold_count_match_the_tables(ws, score, threshold):
    query = CurationQuery(status="pending")
    frame = table(ws)
    values = frame[frame.status == "pending"][score]
    hist = histograms.histogram(ws, query, score, bins=10, threshold=threshold)
    present = values.dropna()
    expected = np.histogram(present, bins=10, range=(present.min(), present.max()))[0]  # the data's range
    assert hist.edges[0] == pytest.approx(present.min()) and hist.edges[-1] == pytest.approx(present.max())
    assert (np.asarray(hist.kept) + np.asarray(hist.past)).tolist() == expected.tolist()
    assert hist.missing == values.isna().sum() and hist.total == len(present)
    past = present < threshold if histograms.HISTOGRAM_SCORES[score].reject_below else present > threshold
    assert sum(hist.past) == past.sum() == histograms.threshold_count(ws, query, score, threshold)
    side = histograms.HISTOGRAM_SCORES[score].side
    assert hist.describe().startswith(f"**{past.sum()}** of the {len(values)} shown have "
                                      f"{histograms.HISTOGRAM_SCORES[score].title} {side} {threshold:.2f}")
    assert hist.action() == f"Reject the {past.sum()} shown {side} {threshold:.2f}…"
    rows = hist.rows()
    assert len({r["bin"] for r in rows}) == 10  # every bin is on the axis, each named by its lower edge
    assert [float(b) for b in dict.fromkeys(r["bin"] for r in rows)] == pytest.approx(hist.edges[:-1], abs=0.01)
    assert sum(r["count"] for r in rows if r["side"] == "rejected") == past.sum()


def test_histogram_bins_follow_the_data(ws):
    """'auto' bins: the values' range, numpy's rule kept within 10-50 bins, named finely enough to tell apart."""
    hist = histograms.histogram(ws, CurationQuery(), "label_prob")
    present = table(ws)["label_prob"].dropna()
    assert hist.edges[0] == pytest.approx(present.min()) and hist.edges[-1] == pytest.approx(present.max())
    assert histograms.MIN_BINS <= len(hist.kept) <= histograms.MAX_BINS and hist.total == len(present)
    rng = np.random.default_rng(0)
    narrow = 0.30 + 0.06 * rng.random(10_000)  # 10,000 values in 0.30-0.36: fine bins, not one 0.05 bar
    edges = histograms.bin_edges(narrow)
    assert edges[0] == narrow.min() and edges[-1] == narrow.max()
    assert len(edges) - 1 == min(histograms.MAX_BINS, len(np.histogram_bin_edges(narrow, "auto")) - 1)
    assert len(histograms.bin_edges(narrow[:5])) - 1 == histograms.MIN_BINS  # few values: at least 10 bins
    constant = histograms.bin_edges(np.full(7, 0.4))
    assert constant[0] < 0.4 < constant[-1]  # one value: a range around it, no division by zero
    labels = histograms.Histogram("label_prob", edges.tolist(), [1] * (len(edges) - 1), [0] * (len(edges) - 1), 0,
                                  None).rows()
    assert len({r["bin"] for r in labels}) == len(edges) - 1  # 0.3012, 0.3024, ...: every bin its own name


def test_threshold_reject_count_equals_what_is_rejected(own_ws):
    query = CurationQuery(status="pending")
    count = histograms.threshold_count(own_ws, query, "label_prob", 0.3)
    plan = decision_plans.plan_threshold(own_ws, query, "label_prob", 0.3)
    assert 0 < count < N and plan.count == count and plan.status == "rejected"
    assert plan.question() == (f"Reject {count} augmentations shown with label prob of A below 0.30? Nothing "
                               "changes until you confirm.")
    before = table(own_ws)
    assert (table(own_ws).status == before.status).all()  # counting changes nothing
    decision = plan.apply(own_ws)
    after = table(own_ws)
    now_rejected = set(after[after.status == "rejected"].id) - set(before[before.status == "rejected"].id)
    assert decision.matched == decision.changed == count == len(now_rejected)
    assert now_rejected == set(plan.ids)
    assert all(p < 0.3 for p in after.set_index("id").loc[list(now_rejected), "label_prob"])


def test_bad_scores_and_thresholds_are_refused(ws):
    with pytest.raises(BadArgumentError, match="score must be one of"):
        histograms.histogram(ws, CurationQuery(), "top_prob")
    with pytest.raises(BadArgumentError, match=r"threshold must be in \[0, 1\]"):
        histograms.threshold_count(ws, CurationQuery(), "drift", 1.5)


# ------------------------------------------------------------------------------------------------ decisions
def test_a_bulk_plan_changes_nothing_until_applied_then_one_undo_reverts_it(own_ws):
    query = CurationQuery(label="dogs", status="pending")
    plan = decision_plans.plan_matching(own_ws, query, "approved")
    expected = expected_ids(table(own_ws), query)
    assert sorted(plan.ids) == sorted(expected) and plan.count == len(expected)
    assert plan.question().startswith(f"Approve {len(expected)} augmentations matching the filter (label dogs")
    assert set(table(own_ws).status) == {"pending", "approved", "rejected"} and table(own_ws).status.tolist().count(
        "approved") == 1
    decision = plan.apply(own_ws)
    assert plan.outcome(decision).startswith(f"✅ Approved {len(expected)} augmentations matching the filter")
    after = table(own_ws).set_index("id")
    assert (after.loc[expected, "status"] == "approved").all()
    assert [h["origin"] for h in details.detail(own_ws, expected[0]).history] == ["app"]
    own_ws.undo_last_review(origin="app")
    assert (table(own_ws).set_index("id").loc[expected, "status"] == "pending").all()


def test_plan_selected_leaves_alone_what_the_filter_no_longer_shows(own_ws):
    pending = query_filters.matching_ids(own_ws, CurationQuery(status="pending"))
    selection = Selection().add(pending[0], pending[1], 2)  # 2 was rejected: not shown by status pending
    plan = decision_plans.plan_selected(own_ws, CurationQuery(status="pending"), selection, "rejected")
    assert sorted(plan.ids) == sorted(pending[:2]) and plan.left_out == 1
    assert "1 selected item is left alone: the filter no longer matches it (#2 is rejected now)" in plan.question()
    with pytest.raises(BadArgumentError, match="nothing is selected"):
        decision_plans.plan_selected(own_ws, CurationQuery(), Selection(), "rejected")
    empty = decision_plans.DecisionPlan("rejected", (), "from the selection")
    with pytest.raises(BadArgumentError, match="nothing to decide"):
        empty.apply(own_ws)


# ------------------------------------------------------------------------------------------------ one item
def test_detail_shows_every_score_the_scorer_and_the_history(ws):
    frame = table(ws).set_index("id")
    detail = details.detail(ws, 2)
    rows = {r[0]: r[1:] for r in detail.score_rows()}
    assert rows["label probability"] == [f"{frame.loc[2, 'label_prob']:.3f}",
                                         f"{frame.loc[2, 'generated_label_prob']:.3f}"]
    assert rows["label rank (1 = top)"][0] in {"1", "2", "3"} and rows["label rank (1 = top)"][1] in {"1", "2", "3"}
    assert rows["CLIP's top class"][0] in {"cats", "dogs", "tabby cat"}
    assert rows["flags"] == [frame.loc[2, "flags"] or "none", frame.loc[2, "generated_flags"] or "none"]
    assert rows["drift of Î from I"] == ["", f"{frame.loc[2, 'drift']:.3f}"]
    assert detail.untrained and UNTRAINED_SCORER_NOTE in detail.summary() and "tiny-random-clip" in detail.summary()
    assert "`ws-2`" in detail.summary() and "status **rejected**" in detail.summary()
    assert [h[1:4] for h in detail.history_rows()] == [["rejected", "pending", "app"]]
    assert details.detail(ws, 5).history_rows()[0][1:4] == ["approved", "pending", "cli"]
    with pytest.raises(WorkspaceError, match="no augmentation #999"):
        details.detail(ws, 999)


# ------------------------------------------------------------------------------------------------ report, rules
@pytest.mark.parametrize("metric", list(report_views.REPORT_METRICS))
def test_report_view_is_the_prompt_report(ws, metric):
    report = score_queries.prompt_report(ws)
    view = report_views.report_view(ws, metric=metric)
    assert view.columns == [c for c in score_queries.REPORT_COLUMNS if c not in ("label", "scorer")]
    assert len(view.rows) == len(report) and [r[-1] for r in view.rows] == [True] * len(report)  # untrained
    assert [b["prompt"] for b in view.bars] == [r["prompt"] for r in report if r[metric] is not None]
    for bar, row in zip(view.bars, (r for r in report if r[metric] is not None)):
        assert bar["value"] == pytest.approx(row[metric], abs=1e-4) and bar["label"] == "all"
    assert UNTRAINED_SCORER_NOTE in view.note and "untrained scorer" in view.headers


def test_report_view_by_class_and_for_one_class(ws):
    by_class = report_views.report_view(ws, by_class=True, label="dogs")
    assert "label" in by_class.columns and len(by_class.rows) == len(score_queries.prompt_report(ws, by_class=True))
    dogs = [r for r in score_queries.prompt_report(ws, by_class=True) if r["label"] == "dogs"]
    assert [(b["prompt"], b["label"]) for b in by_class.bars] == [(r["prompt"], "dogs") for r in dogs]
    one_class = report_views.report_view(ws, label="dogs")  # the plot of one class, the table per prompt
    assert one_class.bars == by_class.bars and "label" not in one_class.columns
    with pytest.raises(BadArgumentError, match="metric must be one of"):
        report_views.report_view(ws, metric="count")


def test_auto_review_rows_count_per_rule_label_and_prompt(ws):
    plan = score_queries.auto_review_plan(ws, score_queries.AutoRules(min_label_prob=0.4, reject_flagged=True))
    text, rows = score_queries.auto_review_rows(plan)
    assert text.startswith(f"Would reject {len(plan.reject)} of {plan.pending} pending augmentation(s)")
    assert UNTRAINED_SCORER_NOTE in text
    assert {r[1]: r[2] for r in rows if r[0] == "rule"} == plan.by_rule()
    assert {r[1]: r[2] for r in rows if r[0] == "label"} == plan.counts("label")
    assert sum(r[2] for r in rows if r[0] == "prompt") == len(plan.reject)


def test_filter_choices_are_the_labels_and_prompts_there_are(ws):
    labels, prompts = query_filters.filter_choices(ws)
    frame = table(ws)
    assert labels == sorted(set(frame.label)) == list(CLASSES) and prompts == sorted(set(frame.prompt))
