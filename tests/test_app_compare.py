"""The Explore tab's "Compare presets" (/compare), called with gradio_client against a launched app on tiny-random."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from diffusemix_core.studio.compare import COMPARE_COLUMNS  # noqa: E402
from diffusemix_core.ui import AppConfig, build_app, launch_kwargs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "landscape.png"


def read_png(path: str) -> np.ndarray:
    assert Path(path).suffix == ".png", path
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    config = AppConfig(model="tiny-random", workspace=tmp_path_factory.mktemp("ws"), resolution=64, steps=2,
                       device="cpu")
    demo = build_app(config)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield Client(url, verbose=False)
    demo.close()


def compare(client, a, b, *, prompt="snowy", seed=4):
    image_a, image_b, table, text = client.predict(handle_file(str(EXAMPLE)), prompt, seed, a, b,
                                                   api_name="/compare")
    assert table["headers"] == COMPARE_COLUMNS
    rows = [dict(zip(COMPARE_COLUMNS, row)) for row in table["data"]]
    return read_png(image_a), read_png(image_b), rows, text


def test_compare_is_a_named_endpoint(client):
    assert "/compare" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]


def test_two_presets_side_by_side_with_their_cost(client):
    image_a, image_b, rows, text = compare(client, "fast", "fastest")
    original = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    assert image_a.shape == image_b.shape == original.shape
    assert not np.array_equal(image_a, image_b)
    assert [(r["setting"], r["preset"]) for r in rows] == [("A", "fast"), ("B", "fastest")]
    # fast: 10 steps x 3 guidance branches; fastest: 5 steps x 2 (image guidance 1.0)
    assert [int(r["UNet evaluations"]) for r in rows] == [30, 10]
    for r in rows:
        assert float(r["seconds"]) > 0 and 0 <= float(r["drift from I"]) <= 1
        assert -1 <= float(r["SSIM Î_A vs Î_B"]) < 1
    assert rows[0]["SSIM Î_A vs Î_B"] == rows[1]["SSIM Î_A vs Î_B"]
    assert "**0.33×** the UNet evaluations" in text and "snowy" in text and "untrained" in text.lower()


def test_the_same_preset_twice_gives_the_same_image(client):
    image_a, image_b, rows, _ = compare(client, "fastest", "fastest", seed=9)
    assert np.array_equal(image_a, image_b)
    assert float(rows[0]["SSIM Î_A vs Î_B"]) == 1.0 and rows[0]["drift from I"] == rows[1]["drift from I"]


def test_reference_is_what_generate_shows_for_that_prompt_and_seed(client):
    """'random' draws the prompt as Generate does, and reference over the app's settings is the app's Generate."""
    stages = client.predict(handle_file(str(EXAMPLE)), "random", "random", 0.2, 3, "random", None,
                            api_name="/augment")
    image_a, _, rows, text = compare(client, "reference", "fast", prompt="random", seed=3)
    assert f"**{stages[6]['prompt']}** · seed 3" in text
    assert np.array_equal(image_a, read_png(stages[1]))
    assert int(rows[0]["UNet evaluations"]) == 2 * 3  # the app's 2 steps x 3 branches


@pytest.mark.parametrize("image, a, b, words", [
    (None, "reference", "fast", "No image given"),
    (EXAMPLE, "reference", "lcm", "lcm is not in the list of choices"),  # lcm needs a LoRA: not offered
    (EXAMPLE, "turbo", "fast", "turbo is not in the list of choices"),
])
def test_bad_input_is_a_clear_error(client, image, a, b, words):
    image = handle_file(str(image)) if image else None
    with pytest.raises(Exception, match=words):
        client.predict(image, "snowy", 1, a, b, api_name="/compare")
