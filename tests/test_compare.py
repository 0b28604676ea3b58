"""`python -m diffusemix_core compare-settings` driven as a user runs it, in a subprocess, on tiny-random at 64 px.

The models are untrained, so the test checks the mechanics: the files, their sizes and columns, what each column
must be (the UNet evaluations of each preset, SSIM 1 for the same settings) and the errors.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from helpers import error_line, run_cli

TINY_64 = ["--model", "tiny-random", "--resolution", "64"]
COLUMNS = ["source", "label", "prompt", "seed", "setting_a", "setting_b", "score_a", "score_b", "ssim", "drift_a",
           "drift_b", "evals_a", "evals_b", "seconds_a", "seconds_b", "grid"]
# the documented grid layout: tiles with a 256 px long side, 4 px apart, a 22 px header, an 18 px caption per row
TILE, GAP, HEADER, CAPTION = 256, 4, 22, 18


@pytest.fixture
def sources(tmp_path, photo):
    """A class-folder dataset: cat/ (two images of different sizes), dog/ (one image and a corrupt file)."""
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    Image.fromarray(photo).save(root / "cat" / "a.png")  # 67 x 45
    Image.fromarray(np.ascontiguousarray(photo[:, :40])).save(root / "cat" / "b.png")  # 40 x 45
    Image.fromarray(np.ascontiguousarray(photo.transpose(1, 0, 2)[:60])).save(root / "dog" / "c.png")  # 45 x 60
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return root


def read_rows(out):
    with open(out / "compare.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_fastest_against_fast_writes_grids_table_and_summary(tmp_path, sources):
    out = tmp_path / "out"
    result = run_cli("compare-settings", sources, "--a", "fastest", "--b", "fast", "--out", out,
                     "--prompts", "autumn,snowy", "--seed", "3", "--scorer", "tiny-random-clip", *TINY_64)
    assert result.returncode == 0, result.stderr
    assert "warning: skipped" in result.stderr and "broken.png" in result.stderr
    assert "untrained test model" in result.stdout

    # one grid per readable source, I | Î_A | Î_B per prompt row, at the documented size
    grids = sorted(out.glob("grid-*.png"))
    assert [g.name for g in grids] == ["grid-001.png", "grid-002.png", "grid-003.png"]
    for grid, name in zip(grids, ("cat/a.png", "cat/b.png", "dog/c.png")):
        source = Image.open(sources / name)
        scale = TILE / max(source.size)
        tw, th = round(source.width * scale), round(source.height * scale)
        image = Image.open(grid)
        assert image.size == (3 * tw + 4 * GAP, HEADER + 2 * (CAPTION + th + GAP)), name
        # the first column of each row is I, scaled to the tile
        expected = np.asarray(source.convert("RGB").resize((tw, th), Image.Resampling.LANCZOS)).astype(int)
        for row in range(2):
            top = HEADER + row * (CAPTION + th + GAP) + CAPTION
            tile = np.asarray(image.convert("RGB"))[top:top + th, GAP:GAP + tw].astype(int)
            assert np.abs(tile - expected).max() <= 1, (name, row)

    fields, rows = read_rows(out)
    assert fields == COLUMNS
    assert len(rows) == 6  # 3 sources x 2 prompts; the corrupt file is not a row
    assert {(r["label"], r["prompt"]) for r in rows} == {("cat", "autumn"), ("cat", "snowy"), ("dog", "autumn"),
                                                          ("dog", "snowy")}
    for r in rows:
        assert (r["setting_a"], r["setting_b"], r["seed"]) == ("fastest", "fast", "3")
        # fastest: 5 DPM-Solver++ steps x 2 branches (image guidance 1.0); fast: 10 steps x 3 branches
        assert (int(r["evals_a"]), int(r["evals_b"])) == (10, 30)
        assert -1.0 <= float(r["ssim"]) < 1.0  # other settings, other Î
        for column in ("drift_a", "drift_b", "score_a", "score_b"):
            assert 0.0 <= float(r[column]) <= 1.0, column
        assert float(r["seconds_a"]) > 0 and float(r["seconds_b"]) > 0
        assert r["grid"] == f"grid-00{['cat/a.png', 'cat/b.png', 'dog/c.png'].index(r['source'][-9:]) + 1}.png"

    summary = (out / "compare.md").read_text(encoding="utf-8")
    assert "| UNet evaluations per augmentation | 10 | 30 | 3.00 |" in summary
    assert "seconds per augmentation (measured)" in summary and "SSIM" in summary
    assert "broken.png" in summary and "untrained test scorer" in summary


def test_the_same_settings_twice_give_the_same_images(tmp_path, sources):
    out = tmp_path / "out"
    result = run_cli("compare-settings", sources / "cat", "--a", "fast", "--b", "fast", "--out", out, "--steps", "2",
                     "--prompts", "autumn", "--scorer", "tiny-random-clip", *TINY_64)
    assert result.returncode == 0, result.stderr
    _, rows = read_rows(out)
    assert len(rows) == 2
    for r in rows:
        assert float(r["ssim"]) == pytest.approx(1.0, abs=1e-9)
        assert r["drift_a"] == r["drift_b"] and r["score_a"] == r["score_b"]
    grid = np.asarray(Image.open(out / "grid-001.png").convert("RGB"))
    tw = TILE  # cat/a.png is wider than high
    a_tile = grid[HEADER + CAPTION:, GAP + tw + GAP:GAP + 2 * tw + GAP]
    b_tile = grid[HEADER + CAPTION:, GAP + 2 * (tw + GAP):GAP + 3 * tw + 2 * GAP]
    assert np.array_equal(a_tile, b_tile)


def test_a_flag_beside_the_presets_wins_over_both(tmp_path, sources):
    out = tmp_path / "out"
    result = run_cli("compare-settings", sources, "--limit", "1", "--a", "reference", "--b", "fast", "--steps", "2",
                     "--out", out, "--prompts", "autumn", "--scorer", "none", *TINY_64)
    assert result.returncode == 0, result.stderr
    _, rows = read_rows(out)
    assert len(rows) == 1 and rows[0]["source"].endswith("a.png")  # --limit: the first source in sorted order
    assert (rows[0]["evals_a"], rows[0]["evals_b"]) == ("6", "6")  # 2 steps x 3 branches under both presets
    assert rows[0]["score_a"] == rows[0]["score_b"] == ""  # --scorer none
    assert "No label scores" in (out / "compare.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "args, status, words",
    [
        (["{root}/no-such-folder"], 1, ["no-such-folder", "does not exist"]),
        (["{root}/dog/broken.png"], 1, ["broken.png", "replace or remove the file"]),
        (["{root}", "--a", "turbo"], 2, ["'turbo'", "reference"]),
        (["{root}", "--b", "lcm"], 1, ["'lcm'", "--lora"]),
        (["{root}", "--limit", "0"], 2, ["--limit", ">= 1"]),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, sources, args, status, words):
    args = [a.format(root=sources) for a in args]
    result = run_cli("compare-settings", *args, "--out", tmp_path / "out", "--scorer", "none", *TINY_64)
    line = error_line(result.stderr)
    assert result.returncode == status, result.stderr
    for word in words:
        assert word in line, line


def test_help_explains_every_flag_and_has_no_preset_flag():
    """--a and --b name the presets; the shared model flags are there, --preset (which would clash) is not."""
    from diffusemix_core.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["compare-settings"]
    result = run_cli("compare-settings", "--help")
    assert result.returncode == 0
    flags = [flag for action in sub._actions for flag in action.option_strings]
    assert "--preset" not in flags and {"--a", "--b", "--steps", "--model", "--scorer", "--limit"} <= set(flags)
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in result.stdout, flag
        assert action.help, f"{action.option_strings} has no help"
