"""The map in the Curate tab through its named endpoints (/map, /map_box, /clear_map_box; gradio_client against a
launched app), on a workspace made by the real bulk run (tiny-random at 64 px, scored by tiny-random-clip, so the
embeddings, the probe and the map exist), checked against the map's coordinates and the manifest read directly;
and the map's model (``studio.curate_map``) on its own: the sample beyond the cap, a workspace without embeddings.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")

from diffusemix_core.curation import embedding_map  # noqa: E402
from diffusemix_core.curation.filters import CurationQuery  # noqa: E402
from diffusemix_core.studio import curate_map as maps  # noqa: E402
from diffusemix_core.workspace.folder import Workspace  # noqa: E402
import test_app_curate  # noqa: E402
from test_app_curate import client, curate, ids_of, statuses  # noqa: E402

app = test_app_curate.app  # the fixture: the launched app on 24 scored augmentations


def in_box(ws: Workspace, box, status: str | None = None) -> set[int]:
    """The ids whose map point lies in `box`, read from the cache table directly."""
    x0, y0, x1, y1 = box
    sql = ("SELECT m.augmentation_id FROM map_points m JOIN augmentations a ON a.id = m.augmentation_id "
           "WHERE m.x BETWEEN ? AND ? AND m.y BETWEEN ? AND ?")
    params = [x0, x1, y0, y1]
    if status:
        sql += " AND a.status = ?"
        params.append(status)
    with sqlite3.connect(ws.db_path) as conn:
        return {r[0] for r in conn.execute(sql, params)}


def left_half(ws: Workspace) -> tuple[float, float, float, float]:
    """A box over the points left of the median x (all of their y): some of the points, not all."""
    points = embedding_map.map_points(ws)
    x, y = points.xy[:, 0], points.xy[:, 1]
    middle = float(np.median(x))
    return float(x.min()) - 0.01, float(y.min()) - 0.01, middle, float(y.max()) + 0.01


def test_the_map_endpoints_are_listed(app):
    endpoints = client(app).view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/map", "/map_box", "/clear_map_box"):
        assert name in endpoints, name
    assert endpoints["/curate"]["parameters"].__len__() == 9  # the filter's inputs are unchanged


def test_map_draws_the_filters_points_coloured(app):
    demo, _ = app
    ws = demo.studio.workspace
    c = client(app)
    curate(c, status="all")
    plot, note = c.predict("class", api_name="/map")
    columns, data = plot["value"]["columns"], plot["value"]["data"]
    assert columns == ["x", "y", "class", "id", "prompt"]
    assert len(data) == 24 and "**24** of the 24 augmentations on the map match the filter" in note
    points = embedding_map.map_points(ws)
    with sqlite3.connect(ws.db_path) as conn:
        labels = dict(conn.execute("SELECT id, label FROM augmentations"))
    for x, y, label, aug_id, _ in data:
        k = list(points.ids).index(aug_id)
        assert (x, y) == pytest.approx(tuple(points.xy[k])) and label == labels[aug_id]
    assert set(dict(zip(columns, data[0]))) >= {"id", "class", "prompt"}  # the tooltip's columns

    plot, note = c.predict("label_prob", api_name="/map")  # a score: numbers, a colour scale
    assert plot["value"]["columns"][2] == "label prob of A"
    assert plot["value"]["datatypes"]["label prob of A"] == "quantitative"
    assert "Coloured by label prob of A" in note

    curate(c, label="cats", status="all")  # the map follows the filter (the browser's follow-up step does it)
    plot, note = c.predict("class", api_name="/map")
    assert {row[2] for row in plot["value"]["data"]} == {"cats"} and len(plot["value"]["data"]) == 8
    with pytest.raises(Exception, match="not in the list of choices"):
        c.predict("nonsense", api_name="/map")


def test_a_box_narrows_the_gallery_and_the_bulk_decision_and_undo_act_on_it(app):
    demo, _ = app
    ws = demo.studio.workspace
    c = client(app)
    curate(c, status="pending")
    pending = {i for i, s in statuses(demo).items() if s == "pending"}
    box = left_half(ws)
    expected = in_box(ws, box) & pending
    assert 0 < len(expected) < len(pending)
    out = c.predict(*box, api_name="/map_box")
    items, line, note = out[0], out[1], out[-5]
    assert sorted(ids_of(items), reverse=True) == sorted(expected, reverse=True)
    assert f"of {len(expected)} " in line and "in the map's box" in line
    assert f"**{len(expected)}** shown" in note
    assert tuple(out[-4:]) == pytest.approx(box)  # the box's numbers, as the fields show them

    before = statuses(demo)
    question, _ = c.predict(api_name="/plan_approve_matching")
    assert question.startswith(f"Approve {len(expected)} augmentation") and "in the map's box" in question
    assert statuses(demo) == before  # counted, not made
    message = c.predict(api_name="/confirm_bulk")
    assert message.startswith(f"✅ Approved {len(expected)} augmentation")
    after = statuses(demo)
    assert {i for i in after if after[i] != before[i]} == expected and {after[i] for i in expected} == {"approved"}

    assert "restored" in c.predict(api_name="/undo_review")
    assert statuses(demo) == before

    out = c.predict(api_name="/clear_map_box")
    assert f"of {len(pending)} " in out[1] and "map's box" not in out[1]
    assert list(out[-4:]) == [None] * 4


def test_a_box_needs_four_numbers(app):
    out = client(app).predict(None, 0, 1, 1, api_name="/map_box")
    assert "no box: drag a box over the map's points" in out[-5]


def test_the_map_model_samples_beyond_its_cap_and_says_when_there_is_no_map(app, tmp_path):
    demo, _ = app
    ws = demo.studio.workspace
    view = maps.map_view(ws, CurationQuery(), "status", max_points=10)
    assert len(view.rows) == 10 and view.matching == 24
    assert "a sample of 10 is drawn" in view.describe()
    assert view.rows == maps.map_view(ws, CurationQuery(), "status", max_points=10).rows  # seeded
    points = embedding_map.map_points(ws)
    assert view.x_lim[0] < points.xy[:, 0].min() and view.x_lim[1] > points.xy[:, 0].max()

    empty = maps.map_view(Workspace(tmp_path / "fresh"), CurationQuery())
    assert empty.rows == [] and "\n" not in empty.describe()
    assert "No map yet" in empty.describe() and "python -m diffusemix_core score --workspace" in empty.describe()
