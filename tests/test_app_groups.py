"""Curate grouped by source, its decision per group and the I ↔ A slider, through the app's named endpoints
(gradio_client against a launched app) on 12 images x 3 made with Î = I and scored, so that every source's second
and third Î are flagged near-duplicates of its first."""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from diffusemix_core.bulk.options import AugmentOptions  # noqa: E402
from diffusemix_core.bulk.runner import run_augment  # noqa: E402
from diffusemix_core.engine.fractals import FractalLibrary  # noqa: E402
from diffusemix_core.ui import AppConfig, build_app, launch_kwargs  # noqa: E402
from diffusemix_core.ui.groups import GROUP_SLOTS  # noqa: E402
from diffusemix_core.workspace.folder import Workspace  # noqa: E402
from test_bulk_options import Echo  # noqa: E402
from test_curation import make_train  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-groups")
    ws = Workspace(root / "ws")
    run_augment(ws, make_train(root / "train"), AugmentOptions(per_image=3, batch_size=12, seed=1,
                                                               scorer="tiny-random-clip"),
                generator=Echo(), fractals=FractalLibrary.procedural(3, seed=1, size=64))
    config = AppConfig(model="tiny-random", workspace=ws.path, resolution=64, steps=2, device="cpu")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield demo, url
    demo.close()


def client(app) -> Client:
    c = Client(app[1], verbose=False, ssl_verify=False)
    c.predict("all", "all", "pending", "all", "newest", 0, 1, 0, 1, api_name="/curate")  # the filter of this session
    return c


def slots(out) -> list[tuple[str, list]]:
    """(header, gallery items) of each slot of a /groups answer (layouts and states are not sent to clients)."""
    return [(out[2 * k], out[2 * k + 1]) for k in range(GROUP_SLOTS)]


def statuses(demo) -> dict[int, str]:
    with sqlite3.connect(demo.studio.workspace.db_path) as conn:
        return dict(conn.execute("SELECT id, status FROM augmentations"))


def test_groups_show_each_source_with_its_prompts_side_by_side(app):
    demo, _ = app
    out = client(app).predict(api_name="/groups")
    assert out[2 * GROUP_SLOTS] == "Page 1 of 2 · 12 sources with matching items."
    shown = slots(out)
    assert all(len(items) == 3 for _, items in shown)  # every augmentation of one source together
    head, items = shown[0]
    assert "· 3 augmentations · ⚑ 2 flagged" in head
    captions = [item["caption"] for item in items]
    assert sum("near_duplicate" in c for c in captions) == 2
    ws = demo.studio.workspace
    ids = [int(re.search(r"#(\d+)", c).group(1)) for c in captions]
    assert all(c.split(" · ")[0] == ws.manifest.get_augmentation(i)["prompt"] for c, i in zip(captions, ids))
    assert len({ws.manifest.get_augmentation(i)["source_id"] for i in ids}) == 1


def test_approve_all_but_flagged_is_one_undoable_decision(app):
    demo, _ = app
    c = client(app)
    out = c.predict(api_name="/groups")
    ids = [int(re.search(r"#(\d+)", item["caption"]).group(1)) for item in slots(out)[0][1]]
    flagged = [i for i, item in zip(ids, slots(out)[0][1]) if "⚑" in item["caption"]]
    answer = c.predict(api_name="/approve_group")
    assert answer[-1].startswith("✅ Approved 1 of ") and "2 flagged left as they are" in answer[-1]
    after = statuses(demo)
    assert [after[i] for i in ids if i not in flagged] == ["approved"] and {after[i] for i in flagged} == {"pending"}
    # the pending filter now shows that group with its two flagged items only
    assert len(slots(answer)[0][1]) == 2
    assert c.predict(api_name="/undo_review").startswith("Undid 'approved' of 1 augmentation")
    assert statuses(demo)[[i for i in ids if i not in flagged][0]] == "pending"


def test_the_slider_compares_i_with_a_or_generated(app):
    demo, _ = app
    c = client(app)
    record = demo.studio.explore.workspace_record(5)
    with_a = c.predict(5, "A", api_name="/compare_slider")
    assert with_a["label"] == "I ↔ A of #5 (drag the handle)"
    first, second = (np.asarray(Image.open(p).convert("RGB")) for p in with_a["value"])
    assert np.array_equal(first, record.original) and np.array_equal(second, record.final)
    with_g = c.predict(5, "Î", api_name="/compare_slider")
    assert np.array_equal(np.asarray(Image.open(with_g["value"][1]).convert("RGB")), record.generated)
