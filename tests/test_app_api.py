"""The app's named endpoints, called with gradio_client against a launched app on tiny-random."""

from __future__ import annotations

import io
import sqlite3
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from diffusemix_core.studio.state import Studio  # noqa: E402
from diffusemix_core.ui import AppConfig, build_app, config_from_args, launch_kwargs, parse_args  # noqa: E402
from diffusemix_core.engine.diffusemix import mix  # noqa: E402
from diffusemix_core.engine.fractals import FractalLibrary  # noqa: E402
from diffusemix_core.engine.prompts import PAPER_PROMPTS  # noqa: E402
from diffusemix_core.errors import DiffuseMixError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "landscape.png"
STAGES = ("original", "generated", "mask", "hybrid", "fractal", "final")


def read_png(path: str) -> np.ndarray:
    assert Path(path).suffix == ".png", path
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    config = AppConfig(model="tiny-random", workspace=tmp_path_factory.mktemp("ws"), resolution=64, steps=2,
                       device="cpu")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    client = Client(url, verbose=False)
    yield demo, client, url
    demo.close()


@pytest.fixture
def default_prompts(app):
    _, client, _ = app
    yield
    client.predict(api_name="/reset_prompts")


def augment(client, *, prompt="random", mask="random", lam=0.2, seed=3, fractal="random"):
    out = client.predict(handle_file(str(EXAMPLE)), prompt, mask, lam, seed, fractal, None, api_name="/augment")
    assert len(out) == 7
    return dict(zip(STAGES, (read_png(p) for p in out[:6]))), out[6]


def engine_mix(stages: dict, *, fractal: str, mask_kind: str, lam: float):
    """(M, H, F, A) as the engine computes them from the stages I and Î the app returned."""
    return mix(stages["original"], stages["generated"], FractalLibrary.default().get(fractal), mask_kind=mask_kind,
               lam=lam)


def test_named_endpoints_are_listed(app):
    _, client, _ = app
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/augment", "/remix", "/export", "/all_prompts", "/approve", "/save_prompts", "/run_dataset",
                 "/harmful_prompts", "/disable_harmful", "/measure_prompts", "/cancel_measure", "/map", "/map_box",
                 "/clear_map_box", "/download_final", "/review_start", "/review_approve", "/review_reject",
                 "/review_skip", "/review_previous", "/review_undo", "/groups", "/approve_group", "/compare_slider",
                 "/score", "/cancel_job", "/jobs"):
        assert name in endpoints


def test_augment_returns_six_stages_that_obey_the_formulas(app):
    _, client, _ = app
    stages, choices = augment(client, mask="left", lam=0.2, seed=3)
    original = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    assert np.array_equal(stages["original"], original)
    for name in STAGES:
        assert stages[name].shape == original.shape, name
    assert choices["mask"] == "left" and choices["lam"] == 0.2 and choices["seed"] == 3
    assert choices["is_test_model"] is True and "untrained" in choices["note"]
    assert choices["prompt"] in PAPER_PROMPTS and choices["result_id"].startswith("r-")
    mask, hyb, frac, final = engine_mix(stages, fractal=choices["fractal"], mask_kind="left", lam=0.2)
    assert np.array_equal(stages["mask"][..., 0] > 127, mask)
    assert np.array_equal(stages["hybrid"], hyb)
    assert np.array_equal(stages["fractal"], frac)
    assert np.array_equal(stages["final"], final)


def test_same_seed_same_result_other_seed_other_result(app):
    _, client, _ = app
    a, ca = augment(client, prompt="snowy", mask="top", seed=11)
    b, cb = augment(client, prompt="snowy", mask="top", seed=11)
    c, _ = augment(client, prompt="snowy", mask="top", seed=12)
    assert ca["result_id"] != cb["result_id"]
    assert np.array_equal(a["generated"], b["generated"]) and np.array_equal(a["final"], b["final"])
    assert not np.array_equal(a["generated"], c["generated"])


def test_remix_changes_with_lam_and_equals_the_engine(app):
    _, client, _ = app
    stages, choices = augment(client, seed=5)
    fractal = FractalLibrary.default().ids[1]
    out = client.predict(choices["result_id"], 0.75, "right", fractal, None, api_name="/remix")
    remixed = dict(zip(STAGES, (read_png(p) for p in out[:6])))
    assert out[6]["lam"] == 0.75 and out[6]["mask"] == "right" and out[6]["fractal"] == fractal
    assert out[6]["result_id"] == choices["result_id"]
    assert np.array_equal(remixed["generated"], stages["generated"])  # no new generation
    assert not np.array_equal(remixed["final"], stages["final"])
    expected = engine_mix(stages, fractal=fractal, mask_kind="right", lam=0.75)
    for name, array in zip(("mask", "hybrid", "fractal", "final"), expected):
        got = remixed[name][..., 0] > 127 if name == "mask" else remixed[name]
        assert np.array_equal(got, array), name
    # "random" keeps what was drawn for the result; only λ changes
    again = client.predict(choices["result_id"], 0.2, "random", "random", None, api_name="/remix")
    assert np.array_equal(read_png(again[5]), stages["final"])


def test_remix_of_an_unknown_id_is_a_clear_error(app):
    _, client, _ = app
    with pytest.raises(Exception, match="generate again"):
        client.predict("r-000000000000", 0.5, "left", "random", None, api_name="/remix")


def test_prompt_edits_take_effect_and_bad_entries_are_refused(app, default_prompts):
    _, client, _ = app
    table = {"headers": ["prompt", "enabled"], "data": [["foggy morning", True], ["autumn", False]]}
    saved = client.predict(table, "A transformed version of image into {prompt}", api_name="/save_prompts")
    assert "Saved 2 prompts (1 enabled)" in saved[2]
    for seed in (1, 2, 3):
        _, choices = augment(client, seed=seed)
        assert choices["prompt"] == "foggy morning"
        assert choices["prompt_text"] == "A transformed version of image into foggy morning"
    before = client.predict(api_name="/get_prompts")
    for bad in ([["snowy", True], ["Snowy", True]], [["", True]], [["x" * 500, True]]):
        msg = client.predict({"headers": ["prompt", "enabled"], "data": bad},
                             "A transformed version of image into {prompt}", api_name="/save_prompts")[2]
        assert msg.startswith("❌ Not saved")
    bad_template = client.predict(table, "no placeholder", api_name="/save_prompts")[2]
    assert bad_template.startswith("❌ Not saved")
    assert client.predict(api_name="/get_prompts")[0] == before[0]


def test_a_prompt_longer_than_the_text_encoder_reads_is_said_when_saved(app, default_prompts):
    _, client, _ = app
    long_prompt = "冬の山村の夕暮れ、雪が静かに降り積もり、窓には暖かい灯りがともる浮世絵風の木版画"  # 40 chars, >77 tokens
    table = {"headers": ["prompt", "enabled"], "data": [["snowy", True], [long_prompt, True]]}
    message = client.predict(table, "A transformed version of image into {prompt}", api_name="/save_prompts")[2]
    assert message.startswith("✅ Saved 2 prompts (2 enabled).")  # saved: a warning, not a refusal
    assert f"⚠️ Prompt '{long_prompt[:10]}" in message and "tokens, over the 77 the text encoder reads" in message
    assert "snowy" not in message.split("⚠️", 1)[1]  # only the long one is named


def test_an_id_beyond_sqlites_range_is_a_one_line_error_naming_it(app):
    _, client, _ = app
    huge = "99999999999999999999999"
    for endpoint, args in (("/approve", (f"ws-{huge}", 0.2, "random", "random", None, "")),
                           ("/reject", (f"ws-{huge}", 0.2, "random", "random", None, "")),
                           ("/remix", (f"ws-{huge}", 0.2, "random", "random", None)),
                           ("/download_final", (f"ws-{huge}", 0.2, "random", "random", None))):
        with pytest.raises(Exception, match=rf"No augmentation #{huge}: an id is a whole number from 1 to "
                                            rf"9223372036854775807; pick one") as info:
            client.predict(*args, api_name=endpoint)
        assert "upstream Gradio app has raised an exception" not in str(info.value), endpoint
    message = client.predict(10**20, api_name="/view")[9]  # the Curate detail: the message beside it
    assert message.startswith("❌ No augmentation #100000000000000000000: an id is a whole number"), message


def test_all_prompts_runs_every_enabled_prompt(app, default_prompts):
    _, client, _ = app
    table = {"headers": ["prompt", "enabled"], "data": [["snowy", True], ["autumn", True], ["sunset", False]]}
    client.predict(table, "A transformed version of image into {prompt}", api_name="/save_prompts")
    gallery = client.predict(handle_file(str(EXAMPLE)), "left", 0.2, 4, api_name="/all_prompts")
    assert [item["caption"] for item in gallery] == ["snowy", "autumn"]
    images = [read_png(item["image"]) for item in gallery]
    assert not np.array_equal(images[0], images[1])


def test_approve_and_export_round_trip(app):
    demo, client, _ = app
    _, choices = augment(client, seed=21, lam=0.3)
    args = (choices["result_id"], 0.3, "random", "random", None, "tabby cat")
    msg = client.predict(*args, api_name="/approve")
    assert msg.startswith("Saved as #")
    aug_id = int(msg.split("#")[1].split()[0])
    # the session remembers what it saved: rejecting the same result flips the status of the same row
    assert client.predict(*args, api_name="/reject") == f"Saved as #{aug_id} (rejected)."
    assert client.predict(*args, api_name="/approve") == f"Saved as #{aug_id} (approved)."
    zip_path, message = client.predict("approved", False, api_name="/export")
    assert "Exported" in message
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        root = names[0].split("/")[0] + "/" if all("/" in n for n in names) else ""  # one top folder, or none
        assert root + "metadata.csv" in names and root + "manifest.sqlite" in names
        images = [n[len(root):] for n in names if n.endswith(".png")]
        assert any(n.split("/")[0] in ("tabby cat", "tabby_cat") and n.count("/") == 1 for n in images)
        meta = pd.read_csv(io.BytesIO(zf.read(root + "metadata.csv")))
        manifest = zf.read(root + "manifest.sqlite")
        row = meta[meta["label"] == "tabby cat"].iloc[0]
        assert row["file_name"] in images and row["lam"] == pytest.approx(0.3) and row["seed"] == 21
        exported = np.asarray(Image.open(io.BytesIO(zf.read(root + row["file_name"]))).convert("RGB"))
    stored = demo.studio.workspace.load_record(aug_id).final
    assert np.array_equal(exported, stored)
    db_file = Path(zip_path).with_suffix(".check.sqlite")
    db_file.write_bytes(manifest)
    with sqlite3.connect(db_file) as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM augmentations")]
    assert statuses and set(statuses) == {"approved"}
    past = client.predict(api_name="/list_exports")
    assert past["headers"][:4] == ["when", "status", "augmentations", "originals"]
    assert past["data"][0][1] == "approved"
    assert Path(past["data"][0][4]).name == Path(zip_path).name  # newest first: the export just made
    assert len(past["data"]) == len(demo.studio.workspace.manifest.list_exports())


def test_two_sessions_curating_at_once_lose_nothing(app):
    demo, _, url = app
    clients = [Client(url, verbose=False) for _ in range(2)]
    results = [augment(c, seed=40 + i)[1]["result_id"] for i, c in enumerate(clients)]
    messages: list[str] = []

    def approve(client, result_id, lam):
        for k in range(3):
            msg = client.predict(result_id, lam + k / 10, "random", "random", None, "race", api_name="/approve")
            messages.append(msg)

    threads = [threading.Thread(target=approve, args=(c, r, 0.1 * (i + 1))) for i, (c, r) in enumerate(zip(clients, results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {int(m.split("#")[1].split()[0]) for m in messages}
    assert len(ids) == 6
    rows = demo.studio.workspace.manifest.list_augmentations(label="race", status="approved")
    assert {r["id"] for r in rows} == ids


def test_dataset_zip_run_and_curate(app, tmp_path):
    demo, client, _ = app
    archive = tmp_path / "tiny.zip"
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(archive, "w") as zf:
        for label in ("cats", "chiens é"):
            for i in range(2):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
                zf.writestr(f"train/{label}/{i}.png", buf.getvalue())
        zf.writestr("train/cats/notes.txt", "not an image")
    train_dir, message = client.predict(handle_file(str(archive)), api_name="/extract_zip")
    assert "2 classes" in message and "cats (2)" in message and "chiens é (2)" in message
    assert train_dir.startswith("upload:") and "/" not in train_dir  # a handle, not a server path
    assert demo.studio.uploads.path(train_dir[7:]).is_relative_to(demo.studio.workspace.path / "datasets")
    text, info = client.predict(train_dir, 2, 0, 0.2, 2, 64, 4, False, api_name="/run_dataset")
    assert text.startswith("✅") and info["augmentations_added"] == 8 and info["images_failed"] == 0
    again = client.predict(train_dir, 2, 0, 0.2, 2, 64, 4, False, api_name="/run_dataset")[1]
    assert again["augmentations_added"] == 0  # resumed: nothing done twice
    items, summary, table, _ = client.predict("chiens é", "all", "all", "all", "drift", api_name="/curate")
    ids = [int(item["caption"].split()[0].lstrip("#")) for item in items]
    assert len(ids) == 4 and all("chiens é" in item["caption"] for item in items) and summary.startswith("Items 1–4 of 4")
    assert [row[1] for row in table["data"]] == ids  # the table beside the grid lists the same page
    drifts = [demo.studio.workspace.manifest.get_augmentation(i)["drift"] for i in ids]
    assert drifts == sorted(drifts, reverse=True)


def test_model_unavailable_keeps_the_app_up(tmp_path):
    config = AppConfig(model=str(tmp_path / "no-such-model"), workspace=tmp_path / "ws", resolution=64, steps=2,
                       device="cpu")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    try:
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match="no-such-model"):
            client.predict(handle_file(str(EXAMPLE)), "random", "random", 0.2, 0, "random", None, api_name="/augment")
        assert "unavailable" in demo.studio.model.status()
        assert client.predict(api_name="/get_prompts")[1]  # still serving
    finally:
        demo.close()


def test_space_mode_refuses_server_folders(tmp_path):
    studio = Studio(AppConfig(model="tiny-random", workspace=tmp_path / "ws", space_mode=True))
    (tmp_path / "elsewhere" / "cat").mkdir(parents=True)

    with pytest.raises(DiffuseMixError, match="upload a zip"):
        studio.datasets.folder(str(tmp_path / "elsewhere"))
    inside = studio.workspace.path / "datasets" / "x" / "train"
    inside.mkdir(parents=True)
    with pytest.raises(DiffuseMixError, match="upload a zip"):  # typed paths are off, even into the workspace
        studio.datasets.folder(str(inside))


def test_launch_defaults_are_safe(tmp_path):

    args = parse_args(["--workspace", str(tmp_path / "w")])
    config = config_from_args(args)
    kwargs = launch_kwargs(config, args)
    assert kwargs["server_name"] == "127.0.0.1"
    assert kwargs["allowed_paths"] == [str(tmp_path / "w-exports")]  # export zips only
    assert kwargs["blocked_paths"] == [str(config.workspace)]  # never the manifest, store or uploads
    assert kwargs["max_file_size"] and kwargs["auth"] is None
    assert launch_kwargs(config, parse_args(["--auth", "ann:secret"]))["auth"] == ("ann", "secret")


def test_readme_client_example_runs(app, readme_python_block):
    """The gradio_client example of the README, run as written against the test app."""
    _, _, url = app
    code = readme_python_block("### App API (gradio_client)").replace("http://127.0.0.1:7860/", url)
    code = code.replace('"examples/landscape.png"', repr(str(EXAMPLE)))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert len(namespace["stages"]) == 6 and len(namespace["remixed"]) == 6
    assert zipfile.is_zipfile(namespace["zip_path"]) and "Exported" in namespace["message"]


def test_stage_pngs_are_compressed_only_when_served_beyond_loopback(tmp_path):
    local = config_from_args(parse_args(["--workspace", str(tmp_path / "a")]))
    shared = config_from_args(parse_args(["--workspace", str(tmp_path / "b"), "--host", "0.0.0.0"]))
    assert local.local and not shared.local
    assert build_app(local).studio.files.compress_level == 0
    assert build_app(shared).studio.files.compress_level == 1
