"""The Explore tab's work without a browser (studio/explore.py): generate, re-mix, decide, and the "same as
stored?" rule of a decision on a workspace item (every choice, feather included; λ up to float noise)."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.errors import BadArgumentError, DiffuseMixError
from diffusemix_core.studio.explore import MAX_ID, Explore, augmentation_id, describe_choices, same_as_stored
from diffusemix_core.studio.model import ModelHolder
from diffusemix_core.studio.served import ResultCache, StageFiles
from diffusemix_core.workspace.folder import Workspace

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "landscape.png"


@pytest.fixture(scope="module")
def explore(tmp_path_factory):
    """An Explore session over a workspace holding one augmentation N made with λ 0.3 and a 20 px feather."""
    from diffusemix_core.engine.diffusemix import DiffuseMix

    root = tmp_path_factory.mktemp("explore")
    ws = Workspace(root / "ws")
    holder = ModelHolder("tiny-random", device="cpu", steps=2, resolution=64)
    fractals = FractalLibrary.default()
    engine = DiffuseMix(fractals=fractals, generator=holder.generator(), lam=0.3, feather=20)
    photo = np.asarray(Image.open(EXAMPLE).convert("RGB"))[:48, :64]
    stored = engine.augment(photo, seed=1, mask="left", label="owl")
    aug_id = ws.save_record(stored, status="pending", origin="app")
    return Explore(ws, holder, fractals, ResultCache(), StageFiles(root / "stages"), max_pixels=1_000_000), aug_id


def count(ws: Workspace) -> int:
    with sqlite3.connect(ws.db_path) as conn:
        return conn.execute("SELECT count(*) FROM augmentations").fetchone()[0]


def test_the_same_as_stored_rule_compares_every_choice(explore):
    session, n = explore
    stored = session.workspace.manifest.get_augmentation(n)
    record = session.workspace_record(n)
    assert (stored["lam"], stored["feather"]) == (0.3, 20) and same_as_stored(record, stored)
    assert same_as_stored(dataclasses.replace(record, lam=0.1 + 0.2), stored)  # 0.30000000000000004: float noise
    for change in (dict(lam=0.31), dict(feather=0), dict(mask_kind="right"), dict(fractal_id="other")):
        assert not same_as_stored(dataclasses.replace(record, **change), stored), change


def test_a_decision_on_a_workspace_item_as_stored_marks_it_even_with_float_noise_in_lam(explore):
    session, n = explore
    before = count(session.workspace)
    message = session.decide("approved", f"ws-{n}", 0.1 + 0.2, "random", "random", None, "")
    assert re.fullmatch(rf"Marked #{n} approved \(decision #\d+\)\.", message), message
    assert count(session.workspace) == before  # no copy stored
    remixed = session.decide("rejected", f"ws-{n}", 0.45, "random", "random", None, "")
    new_id = int(re.fullmatch(rf"Saved as #(\d+) \(rejected\), re-mixed from #{n}\.", remixed).group(1))
    row = session.workspace.manifest.get_augmentation(new_id)
    assert (row["lam"], row["feather"], row["remixed_from"], row["status"]) == (0.45, 20, n, "rejected")
    assert session.workspace.manifest.get_augmentation(n)["status"] == "approved"


def test_generate_remix_decide_and_download_without_a_browser(explore):
    session, _ = explore
    told = []
    *files, choices = session.augment(str(EXAMPLE), "random", "top", 0.2, 5, progress=lambda *a, **k: told.append(k))
    assert len(files) == 6 and all(Path(f).suffix == ".png" for f in files) and told
    rid = choices["result_id"]
    assert choices["mask"] == "top" and choices["seed"] == 5 and "untrained" in choices["note"]
    *remixed, again = session.remix(rid, 0.6, "bottom")
    assert (again["lam"], again["mask"], again["result_id"]) == (0.6, "bottom", rid) and remixed[1] == files[1]
    saved = session.decide("approved", rid, 0.6, "bottom", "random", None, " owl ")
    aug_id = int(re.fullmatch(r"Saved as #(\d+) \(approved\)\.", saved).group(1))
    assert session.decide("rejected", rid, 0.6, "bottom", "random", None, " owl ") == f"Saved as #{aug_id} (rejected)."
    assert session.workspace.manifest.get_augmentation(aug_id)["label"] == "owl"
    full = session.final_full(rid, 0.6, "bottom", "random", None)
    assert Image.open(full).size == Image.open(EXAMPLE).size


@pytest.mark.parametrize("call", [
    lambda s: s.augment(None, "random", "random", 0.2, 0),
    lambda s: s.decide("approved", "", 0.2, "random", "random", None, ""),
    lambda s: s.final_full("", 0.2, "random", "random", None),
])
def test_missing_inputs_are_one_sentence_errors(explore, call):
    with pytest.raises(BadArgumentError, match=r"^No (image|result) .*first\.$"):
        call(explore[0])


@pytest.mark.parametrize("value", ["99999999999999999999999", 10**20, 1e20, "abc", "-3", "0", 0, True, "٣"])
def test_an_id_out_of_range_is_named_in_one_sentence(value):
    with pytest.raises(BadArgumentError) as info:
        augmentation_id(value)
    text = str(info.value)
    assert text.startswith("No augmentation #") and f"from 1 to {MAX_ID}" in text and "pick one" in text
    shown = str(int(value)) if isinstance(value, float) else str(value)
    assert f"#{shown}:" in text


def test_ids_within_range_are_taken():
    assert [augmentation_id(v) for v in (5, "7", " 8 ", 9.0, MAX_ID)] == [5, 7, 8, 9, MAX_ID]


def test_a_huge_workspace_id_is_refused_before_sqlite_sees_it(explore):
    session, _ = explore
    for result_id in ("ws-99999999999999999999999", f"ws-{MAX_ID + 1}"):
        with pytest.raises(DiffuseMixError, match=rf"No augmentation #{result_id[3:]}: an id is a whole number"):
            session.remix(result_id, 0.2)
        with pytest.raises(DiffuseMixError, match=rf"No augmentation #{result_id[3:]}"):
            session.decide("approved", result_id, 0.2, "random", "random", None, "")
    with pytest.raises(DiffuseMixError, match="no augmentation with id 123456"):
        session.remix("ws-123456", 0.2)


def test_the_choices_in_words():
    text, prompt, mask, fractal = describe_choices({"prompt": "snowy", "mask": "left", "fractal": "f03", "lam": 0.25,
                                                    "seed": 4})
    assert text == ("**A** = prompt **snowy** · mask **left** (left half of I kept) · fractal **f03** · λ **0.25** · "
                    "seed 4")
    assert (prompt, mask, fractal) == ("this A: snowy", "this A: left (left half kept)", "this A: f03")
    assert describe_choices(None) == ("", None, None, None)
