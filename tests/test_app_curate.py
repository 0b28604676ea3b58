"""The Curate tab and the prompt report through the app's named endpoints (gradio_client against a launched app),
on a workspace made by the real bulk run (tiny-random at 64 px, scored by tiny-random-clip).

Each test uses its own client, so its own session: the filter shown, the page, the selection and a counted
decision are per session, as in a browser tab. The buttons' follow-up events (showing the page again after a
decision) run in the browser; here the test asks for the page itself.
"""

from __future__ import annotations

import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from diffusemix_core.ui import AppConfig, build_app, launch_kwargs  # noqa: E402
from diffusemix_core.curation import detail as details, filters as query_filters, page as pages, previews  # noqa: E402
from diffusemix_core.bulk.options import AugmentOptions  # noqa: E402
from diffusemix_core.bulk.runner import run_augment  # noqa: E402
from diffusemix_core.engine.fractals import FractalLibrary  # noqa: E402
from diffusemix_core.engine.test_models import UNTRAINED_SCORER_NOTE  # noqa: E402
from diffusemix_core.workspace.folder import Workspace  # noqa: E402
from test_curation import make_train  # noqa: E402  (12 images in 3 classes)

STAGES = ("original", "generated", "mask", "hybrid", "fractal", "final")


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_generator):
    root = tmp_path_factory.mktemp("app-curate")
    ws = Workspace(root / "ws")
    run_augment(ws, make_train(root / "train"), AugmentOptions(per_image=2, batch_size=4, seed=1,
                                                               scorer="tiny-random-clip"),
                generator=tiny_generator, fractals=FractalLibrary.procedural(3, seed=1, size=64))
    config = AppConfig(model="tiny-random", workspace=ws.path, resolution=64, steps=2, device="cpu")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield demo, url
    demo.close()


def client(app) -> Client:
    """A new session (a new browser tab)."""
    return Client(app[1], verbose=False, ssl_verify=False)


def statuses(demo) -> dict[int, str]:
    with sqlite3.connect(demo.studio.workspace.db_path) as conn:
        return dict(conn.execute("SELECT id, status FROM augmentations"))


def curate(c: Client, label="all", prompt="all", status="all", flags="all", sort="newest"):
    """/curate: (gallery items, page line, table, selection line)."""
    return c.predict(label, prompt, status, flags, sort, 0, 1, 0, 1, api_name="/curate")


def ids_of(items) -> list[int]:
    return [int(item["caption"].removeprefix("✓ ").split()[0].lstrip("#")) for item in items]


def test_the_curate_endpoints_are_listed(app):
    endpoints = client(app).view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/curate", "/next_page", "/previous_page", "/view", "/toggle_selection", "/select_page",
                 "/clear_selection", "/plan_approve_selected", "/plan_reject_selected", "/plan_approve_matching",
                 "/plan_reject_matching", "/confirm_bulk", "/approve_this", "/reject_this", "/undo_review",
                 "/threshold", "/plan_threshold", "/confirm_threshold", "/auto_review_dry_run",
                 "/auto_review_apply", "/prompt_report"):
        assert name in endpoints, name


def test_captions_and_the_table_carry_the_scores(app):
    demo, _ = app
    items, line, table, _ = curate(client(app), sort="label_prob")
    ws = demo.studio.workspace
    expected = pages.page(ws, query_filters.CurationQuery(sort="label_prob"), 0, 40)
    assert ids_of(items) == expected.ids == [row[1] for row in table["data"]]
    probs = [float(item["caption"].split(" · p ")[1].split("*")[0]) for item in items]
    assert probs == sorted(probs)  # the score sorted by is in every caption
    for item, row in zip(items, expected.rows):
        assert f"drift {row['drift']:.2f}" in item["caption"] and item["caption"].endswith(row["prompt"])
        assert Path(item["image"]).suffix == ".png"
    assert table["headers"] == pages.TABLE_COLUMNS
    assert line.startswith("Items 1–24 of 24 (page 1 of 1)") and UNTRAINED_SCORER_NOTE in line


def test_viewing_an_item_does_not_change_the_selection(app):
    c = client(app)
    items, *_ = curate(c)
    first, second = ids_of(items)[:2]
    for _ in range(2):  # looking twice
        c.predict(first, api_name="/view")
    assert c.predict(api_name="/previous_page")[3] == "Nothing selected."
    items, _, table, selection = c.predict(api_name="/toggle_selection")  # selects the item viewed
    assert selection == f"1 selected: #{first}."
    c.predict(second, api_name="/view")
    c.predict(first, api_name="/view")
    items, _, table, selection = c.predict(api_name="/previous_page")
    assert selection == f"1 selected: #{first}."
    marked = [item["caption"].startswith("✓ ") for item in items]
    assert marked == [i == first for i in ids_of(items)]
    assert [row[0] for row in table["data"]] == ["✓" if i == first else "" for i in ids_of(items)]
    picture = np.asarray(Image.open(items[0]["image"]).convert("RGB"))
    assert (picture[0, 0] == previews.SELECTED_COLOUR).all()  # the mark is in the picture too
    # selecting again unselects; "Select this page" and "Clear" do what they say
    assert c.predict(api_name="/toggle_selection")[3] == "Nothing selected."
    assert c.predict(api_name="/select_page")[3].startswith("24 selected")
    assert c.predict(api_name="/clear_selection")[3] == "Nothing selected."


def test_a_filter_change_clears_the_selection(app):
    c = client(app)
    items, *_ = curate(c)
    c.predict(ids_of(items)[0], api_name="/view")
    assert c.predict(api_name="/toggle_selection")[3].startswith("1 selected")
    items, _, _, selection = curate(c, label="dogs")
    assert selection == "Nothing selected." and not any(i["caption"].startswith("✓") for i in items)
    assert c.predict(api_name="/plan_reject_selected")[1].startswith("❌ nothing is selected")


def test_a_bulk_decision_is_counted_then_confirmed_and_clears_the_selection(app):
    demo, _ = app
    c = client(app)
    items, *_ = curate(c, status="pending")
    chosen = ids_of(items)[:2]
    for aug_id in chosen:
        c.predict(aug_id, api_name="/view")
        c.predict(api_name="/toggle_selection")
    before = statuses(demo)
    question, message = c.predict(api_name="/plan_reject_selected")
    assert question == "Reject 2 augmentations from the selection? Nothing changes until you confirm."
    assert message == "" and statuses(demo) == before  # nothing changes until confirmed
    result = c.predict(api_name="/confirm_bulk")
    assert result == "✅ Rejected 2 augmentations from the selection (2 changed; the Undo button reverts it)."
    after = statuses(demo)
    assert {i for i in after if after[i] != before[i]} == set(chosen) and {after[i] for i in chosen} == {"rejected"}
    items, line, _, selection = c.predict(api_name="/previous_page")
    assert selection == "Nothing selected." and not set(chosen) & set(ids_of(items))
    assert c.predict(api_name="/confirm_bulk").startswith("❌ Nothing to confirm")  # a plan is used once
    assert c.predict(api_name="/undo_review").startswith("Undid 'rejected' of 2 augmentation(s)")
    assert statuses(demo) == before


def test_approve_all_matching_counts_every_page(app):
    demo, _ = app
    c = client(app)
    curate(c, label="cats", status="pending")
    pending_cats = [i for i, s in statuses(demo).items() if s == "pending"
                    and demo.studio.workspace.manifest.get_augmentation(i)["label"] == "cats"]
    question, _ = c.predict(api_name="/plan_approve_matching")
    assert question.startswith(f"Approve {len(pending_cats)} augmentations matching the filter (label cats, "
                               "status pending)?")
    c.predict(api_name="/confirm_bulk")
    assert {statuses(demo)[i] for i in pending_cats} == {"approved"}
    c.predict(api_name="/undo_review")


def test_the_threshold_count_is_what_gets_rejected(app):
    demo, _ = app
    c = client(app)
    curate(c, status="pending")
    pending = sum(s == "pending" for s in statuses(demo).values())
    plot, text = c.predict("label_prob", 0.3, api_name="/threshold")
    count = int(text.split("**")[1])
    assert text == f"**{count}** of the {pending} shown have label prob of A below 0.30." and 0 < count < pending
    bars = plot["value"]["data"]  # the histogram: [bin, count, side]
    assert sum(n for _, n, side in bars if side == "rejected") == count and sum(n for _, n, _ in bars) == pending
    before = statuses(demo)
    question, message = c.predict("label_prob", 0.3, api_name="/plan_threshold")
    assert question.startswith(f"Reject {count} augmentations shown with label prob of A below 0.30?")
    assert statuses(demo) == before
    result = c.predict(api_name="/confirm_threshold")
    after = statuses(demo)
    changed = [i for i in after if after[i] != before[i]]
    assert len(changed) == count and {after[i] for i in changed} == {"rejected"}
    assert result.startswith(f"✅ Rejected {count} augmentations shown with label prob of A below 0.30 ({count} "
                             "changed")
    c.predict(api_name="/undo_review")
    assert statuses(demo) == before


def test_the_detail_view_shows_six_stages_every_score_and_the_history(app):
    demo, _ = app
    c = client(app)
    aug_id = ids_of(curate(c)[0])[3]
    *stages, summary, scores_table, history, message = c.predict(aug_id, api_name="/view")
    assert len(stages) == 6 and all(Path(p).suffix == ".png" for p in stages)
    record = demo.studio.workspace.load_record(aug_id)
    assert np.array_equal(np.asarray(Image.open(stages[5]).convert("RGB")), record.final)
    assert scores_table["headers"] == ["score", "A", "Î"]
    assert [row[0] for row in scores_table["data"]] == ["label probability", "label rank (1 = top)",
                                                       "CLIP's top class", "flags", "drift of Î from I"]
    assert "tiny-random-clip" in summary and UNTRAINED_SCORER_NOTE in summary and f"#{aug_id}" in summary
    decided = [row for row in history["data"] if any(row)]  # an empty table may come back as one blank row
    assert decided == [list(r) for r in details.detail(demo.studio.workspace, aug_id).history_rows()]
    status = statuses(demo)[aug_id]
    assert c.predict(api_name="/approve_this") == f"Marked #{aug_id} approved."  # the item viewed
    *_, history, _ = c.predict(aug_id, api_name="/view")
    assert len(history["data"]) == len(decided) + 1 and history["data"][-1][1:4] == ["approved", status, "app"]
    c.predict(api_name="/reject_this")
    *_, history, _ = c.predict(aug_id, api_name="/view")
    assert [row[1] for row in history["data"][-2:]] == ["approved", "rejected"]


def test_auto_review_dry_run_counts_then_apply_records_origin_auto(app):
    demo, _ = app
    c = client(app)
    curate(c, label="tabby-cat")
    before = statuses(demo)
    text, table = c.predict(True, 0.4, False, 0.9, False, api_name="/auto_review_dry_run")
    count = int(text.split()[2])
    assert text.startswith(f"Would reject {count} of ") and UNTRAINED_SCORER_NOTE in text
    assert statuses(demo) == before and count > 0
    by = {(row[0], row[1]): row[2] for row in table["data"]}
    assert by[("rule", "min_label_prob")] == count and by[("label", "tabby-cat")] == count
    assert c.predict(api_name="/auto_review_apply").startswith(f"✅ Auto review rejected {count} augmentation(s)")
    after = statuses(demo)
    changed = [i for i in after if after[i] != before[i]]
    assert len(changed) == count
    with sqlite3.connect(demo.studio.workspace.db_path) as conn:
        origins = {r[0] for r in conn.execute(
            "SELECT origin FROM reviews WHERE id IN (SELECT max(id) FROM reviews GROUP BY augmentation_id) "
            f"AND augmentation_id IN ({','.join(map(str, changed))})")}  # the latest decision on each
    assert origins == {"auto"}
    c.predict(api_name="/undo_review")
    assert statuses(demo) == before


def test_errors_show_in_the_message_next_to_the_button(app):
    c = client(app)
    curate(c)
    *stages, summary, _, _, message = c.predict(999, api_name="/view")
    assert message.startswith("❌ no augmentation #999")
    assert summary == {"__type__": "update"} and stages[5] == {"__type__": "update"}  # left as they were
    assert c.predict(api_name="/approve_this").startswith("❌ View an augmentation first")
    assert c.predict(api_name="/toggle_selection")[1].startswith("❌ View an augmentation first")


def test_the_prompt_report_table_plot_and_untrained_note(app):
    c = client(app)
    table, plot, note, _ = c.predict(False, "mean_label_prob", "all", api_name="/prompt_report")
    assert table["headers"][:5] == ["prompt", "count", "scored", "p(A) mean", "p(Î) mean"]
    assert sum(row[1] for row in table["data"]) == 24
    assert UNTRAINED_SCORER_NOTE in note and "tiny-random-clip" in note
    assert plot["title"] == "mean label prob of A · untrained scorer"  # the plot says whose scores these are
    bars = {prompt: value for prompt, value, _ in plot["value"]["data"]}
    assert bars.keys() == {row[0] for row in table["data"]}
    assert all(bars[row[0]] == pytest.approx(row[3], abs=6e-4) for row in table["data"])  # the table rounds
    by_class, plot, _, _ = c.predict(True, "flagged_share", "dogs", api_name="/prompt_report")
    assert plot["title"].startswith("flagged share · class dogs")
    assert by_class["headers"][:2] == ["prompt", "class"] and {row[1] for row in by_class["data"]} == {
        "cats", "dogs", "tabby-cat"}


def test_the_export_zip_has_the_layout_the_app_describes(app):
    demo, _ = app
    zip_path, message = client(app).predict("all", False, api_name="/export")
    assert message.startswith("Exported 24 augmentations")
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    top = Path(zip_path).stem + "/"  # one folder named after the export
    assert all(n.startswith(top) for n in names)
    assert {top + "metadata.csv", top + "manifest.sqlite"} <= set(names)
    images = [n[len(top):] for n in names if n.endswith(".png")]
    assert len(images) == 24 and all(n.count("/") == 1 and n.split("/")[1].startswith("aug_") for n in images)
