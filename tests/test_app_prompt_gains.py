"""The Prompt library tab and measured prompt gains, through the app's API (a real server + gradio_client): a
per-prompt training run in the background (progress, cancellable) whose summary, bar chart and heat map come back
and whose gains then stand beside each prompt; the harmful prompts listed and disabled only after the confirm."""

from __future__ import annotations

import sqlite3
import time

import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from diffusemix_core.bulk.options import AugmentOptions  # noqa: E402
from diffusemix_core.bulk.runner import run_augment  # noqa: E402
from diffusemix_core.engine.fractals import FractalLibrary  # noqa: E402
from diffusemix_core.engine.generation import GenerationSettings  # noqa: E402
from diffusemix_core.engine.prompts import PromptEntry, PromptLibrary  # noqa: E402
from diffusemix_core.ui import AppConfig, build_app, launch_kwargs  # noqa: E402
from diffusemix_core.workspace.folder import Workspace  # noqa: E402
from diffusemix_core.workspace.prompt_gains import record_prompt_gains  # noqa: E402
from test_training_prompts import write_colour_classes  # noqa: E402

PROMPTS = ["autumn", "snowy"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-gains")
    train = write_colour_classes(root / "data" / "train", 3, seed=0)
    write_colour_classes(root / "data" / "val", 2, seed=1)
    library = PromptLibrary([PromptEntry(t) for t in PROMPTS])
    ws = Workspace(root / "ws")
    ws.manifest.set_prompt_library(library)
    run_augment(ws, train, AugmentOptions(all_prompts=True, settings=GenerationSettings(
        model="tiny-random", steps=2, resolution=64, device="cpu")), prompts=library,
        fractals=FractalLibrary.procedural(4, seed=0, size=64))
    ws.review("approved")
    config = AppConfig(model="tiny-random", workspace=root / "ws", resolution=64, steps=2, device="cpu",
                       data_root=root / "data")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield root, Client(url, verbose=False)
    demo.close()


def measure(client, root, epochs=2, repeats=2):
    return client.submit(str(root / "data" / "val"), "resnet-tiny", epochs, repeats, 32, api_name="/measure_prompts")


def test_a_measuring_run_shows_its_summary_and_plots_and_the_gains_join_the_table(app):
    root, client = app
    summary, bars, heat = measure(client, root).result(timeout=300)
    assert "| prompt: autumn |" in summary and "| prompt: snowy |" in summary and "Stored 2 prompt gain(s)" in summary
    for path in (bars, heat):
        with Image.open(path) as png:
            assert png.size[0] >= 400
    table = client.predict(api_name="/get_prompts")[0]
    assert table["headers"][2] == "measured gain (95% CI)"
    with sqlite3.connect(root / "ws" / "manifest.sqlite") as conn:
        stored = dict(conn.execute("SELECT prompt, gain FROM prompt_gains WHERE kind = 'alone' ORDER BY id"))
    for text, enabled, gain, consistency in table["data"]:
        assert text in PROMPTS and enabled is True
        assert gain.startswith(f"{stored[text]:+.1f} [") and gain.endswith("×2"), gain
        assert consistency == "–"  # nothing scored in this workspace


def test_a_measuring_run_can_be_cancelled(app):
    root, client = app
    job = measure(client, root, epochs=40, repeats=3)
    deadline = time.time() + 120
    while time.time() < deadline and not list((root / "ws").parent.glob("**/prompt-study/*/results.csv")):
        time.sleep(0.2)
    time.sleep(1.0)
    client.predict(api_name="/cancel_measure")
    with pytest.raises(Exception, match="cancelled"):
        job.result(timeout=120)


def test_harmful_prompts_are_listed_and_disabled_only_after_the_confirm(app):
    root, client = app
    ws = Workspace(root / "ws", create=False)
    record_prompt_gains(ws, [{"prompt": "snowy", "gain": -6.0, "low": -9.0, "high": -3.0, "repeats": 3,
                              "model": "resnet-tiny", "epochs": 2},
                             {"prompt": "autumn", "gain": -1.0, "low": -4.0, "high": 2.0, "repeats": 3,
                              "model": "resnet-tiny", "epochs": 2}])
    question = client.predict(api_name="/harmful_prompts")  # the list is kept in the session
    assert "**snowy**" in question and "autumn" not in question
    assert "**snowy**: -6.0 [-9.0, -3.0] ×3" in question and "Disable them?" in question
    assert ws.manifest.get_prompt_library().enabled() == PROMPTS  # asking wrote nothing
    out = client.predict(api_name="/disable_harmful")  # the confirm: disables what was shown
    assert "Disabled 1 prompt(s): snowy" in out[2]
    assert [row[:2] for row in out[0]["data"]] == [["autumn", True], ["snowy", False]]
    assert ws.manifest.get_prompt_library().enabled() == ["autumn"]
    question = client.predict(api_name="/harmful_prompts")
    assert question.startswith("No harmful prompt")
    assert "Nothing disabled" in client.predict(api_name="/disable_harmful")[2]  # nothing confirmed: nothing done
