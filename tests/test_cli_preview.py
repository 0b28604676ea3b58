"""`python -m diffusemix_core preview` driven as a user runs it, in a subprocess."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers import TINY, cli_env, error_line, run_cli


@pytest.fixture
def image_file(tmp_path, photo):
    path = tmp_path / "my photo.jpg"
    Image.fromarray(photo).save(path, quality=95)
    return path


def test_preview_writes_six_stages_and_choices(tmp_path, image_file):
    out = tmp_path / "out"
    result = run_cli("preview", str(image_file), "--out", str(out), "--prompt", "aurora", "--mask", "bottom",
                     "--lam", "0.3", "--seed", "5", *TINY)
    assert result.returncode == 0, result.stderr
    assert "untrained test model" in result.stdout
    size = Image.open(image_file).size
    for name in ("original", "generated", "mask", "hybrid", "fractal", "final"):
        with Image.open(out / f"{name}.png") as im:
            assert im.size == size, name
    choices = json.loads((out / "choices.json").read_text(encoding="utf-8"))
    assert (choices["prompt"], choices["mask"], choices["lam"], choices["seed"]) == ("aurora", "bottom", 0.3, 5)
    assert choices["prompt_text"] == "A transformed version of image into aurora"
    mask = np.asarray(Image.open(out / "mask.png"))
    assert mask[: size[1] // 2].max() == 0 and mask[size[1] // 2 :].min() == 255  # bottom half of I kept

    again = tmp_path / "again"
    assert run_cli("preview", str(image_file), "--out", str(again), "--seed", "5", "--prompt", "aurora",
                   "--mask", "bottom", "--lam", "0.3", *TINY).returncode == 0
    for name in ("generated", "final"):
        assert (out / f"{name}.png").read_bytes() == (again / f"{name}.png").read_bytes(), name


@pytest.mark.parametrize(
    "extra, value, remedy",
    [
        (["--lam", "1.5"], "1.5", "[0, 1]"),
        (["--mask", "diagonal"], "'diagonal'", "left, right, top, bottom, box"),
        (["--resolution", "100"], "100", "multiple of 8"),
        (["--seed", "100000000000000000000"], "100000000000000000000", "from 0 to"),
    ],
)
def test_preview_bad_arguments_are_one_line_errors(tmp_path, image_file, extra, value, remedy):
    result = run_cli("preview", str(image_file), "--out", str(tmp_path / "o"), *TINY, *extra)
    line = error_line(result.stderr)
    assert result.returncode == 1
    assert value in line and remedy in line


def test_preview_of_a_corrupt_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    result = run_cli("preview", str(bad), "--out", str(tmp_path / "o"), *TINY)
    line = error_line(result.stderr)
    assert result.returncode == 1
    assert str(bad) in line and "replace or remove the file" in line


def test_preview_with_the_default_model_offline_says_what_to_do(tmp_path, image_file):
    result = run_cli("preview", str(image_file), "--out", str(tmp_path / "o"), timeout=120,
                     env=cli_env(HF_HOME=str(tmp_path / "empty-hf-home")))
    assert result.returncode == 1
    assert "timbrooks/instruct-pix2pix" in result.stderr and "--model" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_prompt_the_text_encoder_would_cut_off_is_warned_about_and_still_runs(tmp_path, image_file):
    """Under the 200-character limit but over CLIP's 77 tokens once in the template: said on stderr, not refused."""
    long = "film stock " + "0123456789" * 9  # 101 characters; CLIP reads each digit as a token
    out = tmp_path / "out"
    result = run_cli("preview", str(image_file), "--out", str(out), "--prompts", f"autumn,{long}", "--prompt",
                     "autumn", *TINY)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "tokens, over the 77 the text encoder reads" in warnings[0]
    assert long[:20] in warnings[0] and (out / "final.png").exists()
