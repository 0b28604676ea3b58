"""Which prompts help: per-prompt and leave-one-out arms, repeats with intervals paired by seed, p/λ sweeps and a p
schedule, per-class results and the plots, by the `train` command run as a user runs it (a subprocess), on a toy
workspace made by the real bulk run (two prompts, every prompt on every image) with resnet-tiny at 32 px."""

from __future__ import annotations

import csv
import math
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusemix_core.bulk.options import AugmentOptions
from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.generation import GenerationSettings
from diffusemix_core.engine.prompts import PromptEntry, PromptLibrary
from diffusemix_core.errors import BadArgumentError
from diffusemix_core.training.arms import PSchedule, parse_p_schedule, plan_arms
from diffusemix_core.training.dataset import DiffuseMixDataset
from diffusemix_core.training.stats import paired_gain, t_quantile
from diffusemix_core.workspace.folder import Workspace
from helpers import run_cli

COLOURS = {"blue": (40, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}
PROMPTS = ["autumn", "snowy"]
FRACTALS = FractalLibrary.procedural(4, seed=0, size=64)
SIZE = 32


def write_colour_classes(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 30, (40, 44, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A workspace with 4 images per class, one Î per prompt (2 prompts) each, all approved; a validation folder."""
    root = tmp_path_factory.mktemp("prompts")
    train = write_colour_classes(root / "train", 4, seed=0)
    write_colour_classes(root / "val", 3, seed=1)
    library = PromptLibrary([PromptEntry(t) for t in PROMPTS] + [PromptEntry("mosaic", enabled=False)])
    ws = Workspace(root / "ws")
    ws.manifest.set_prompt_library(library)
    run_augment(ws, train, AugmentOptions(all_prompts=True, settings=GenerationSettings(
        model="tiny-random", steps=2, resolution=64, device="cpu")), prompts=library, fractals=FRACTALS)
    ws.review("approved")
    return root


def train(data, out: Path, *extra: str, timeout: float = 240):
    proc = run_cli("train", "--workspace", str(data / "ws"), "--val-dir", str(data / "val"), "--out", str(out),
                   "--model", "resnet-tiny", "--size", str(SIZE), "--batch-size", "6", "--lr", "0.05", "--device",
                   "cpu", "--workers", "0", "--no-progress", *extra, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# the pieces --------------------------------------------------------------------------------------------------
def test_the_dataset_restricted_to_a_prompt_remixes_only_that_prompts_generations(data):
    with sqlite3.connect(data / "ws" / "manifest.sqlite") as conn:
        by_prompt = {p: {g for (g,) in conn.execute(
            "SELECT g.path FROM augmentations a JOIN generations g ON g.id = a.generation_id WHERE a.prompt = ?",
            [p])} for p in PROMPTS}
    assert all(len(v) == 12 for v in by_prompt.values()) and not by_prompt["autumn"] & by_prompt["snowy"]
    for prompt in PROMPTS:
        ds = DiffuseMixDataset(data / "ws", prompts=[prompt], p=1.0, size=SIZE, fractals=FRACTALS)
        assert list(ds.generated_counts) == [1] * 12 and ds.prompts == (prompt,)
        for i in range(len(ds)):
            _, generated = ds._images(int(ds.source_ids[i]))
            assert set(generated) <= by_prompt[prompt] and len(generated) == 1
    both = DiffuseMixDataset(data / "ws", prompts=PROMPTS, size=SIZE, fractals=FRACTALS)
    assert list(both.generated_counts) == [2] * 12
    none = DiffuseMixDataset(data / "ws", prompts=["mosaic"], size=SIZE, fractals=FRACTALS)
    assert none.sources_with_generated == 0  # no Î of that prompt: every item is the original
    with pytest.raises(BadArgumentError):
        DiffuseMixDataset(data / "ws", prompts=[], size=SIZE, fractals=FRACTALS)


def test_set_p_changes_the_draws_like_a_new_dataset_with_that_p(data):
    ds = DiffuseMixDataset(data / "ws", p=0.0, size=SIZE, fractals=FRACTALS, seed=3)
    ds.set_p(0.6)
    fresh = DiffuseMixDataset(data / "ws", p=0.6, size=SIZE, fractals=FRACTALS, seed=3)
    assert [ds.draw(i, 2) for i in range(12)] == [fresh.draw(i, 2) for i in range(12)]
    with pytest.raises(BadArgumentError):
        ds.set_p(1.5)


def test_paired_gain_is_the_t_interval_of_the_differences():
    arm, base = [60.0, 70.0, 65.0, 72.0], [55.0, 61.0, 66.0, 63.0]
    diffs = np.subtract(arm, base)
    g = paired_gain(arm, base)
    half = 3.182 * diffs.std(ddof=1) / math.sqrt(4)
    assert g.mean == pytest.approx(diffs.mean()) and g.low == pytest.approx(diffs.mean() - half)
    assert g.high == pytest.approx(diffs.mean() + half) and g.verdict == "noise"
    assert paired_gain([70, 71, 72], [60, 60, 61]).verdict == "better"
    assert paired_gain([50, 51, 52], [60, 60, 61]).verdict == "worse"
    one = paired_gain([70.0], [60.0])
    assert one.verdict == "unknown" and one.low is None and "unknown" in one.text()
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 9, 30):
        assert t_quantile(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=1e-3)


def test_plan_arms_sweeps_and_schedules():
    arms = plan_arms(["baseline", "online"], ps=[0.25, 0.5], lams=[0.1, (0.1, 0.3)],
                     schedule=parse_p_schedule("linear:0.1-0.5"), per_prompt=["a", "b"], leave_one_out=["a", "b"])
    assert [a.name for a in arms] == ["baseline", "online p=0.25 λ=0.1", "online p=0.25 λ=0.1-0.3",
                                      "online p=0.5 λ=0.1", "online p=0.5 λ=0.1-0.3", "online p=linear:0.1-0.5",
                                      "prompt: a", "prompt: b", "without: a", "without: b"]
    assert arms[-1].prompts == ("a",) and arms[-3].prompts == ("b",)
    assert [PSchedule(0.1, 0.5).at(e, 5) for e in range(1, 6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert [a.name for a in plan_arms([], per_prompt=["x"])] == ["baseline", "prompt: x"]  # the baseline comes in
    for bad in ("linear:0.1", "cosine:0.1-0.5", "linear:0.2-1.5"):
        with pytest.raises(BadArgumentError):
            parse_p_schedule(bad)


# the command -------------------------------------------------------------------------------------------------
def test_per_prompt_and_leave_one_out_arms_with_repeats(data, tmp_path):
    out = tmp_path / "out"
    proc = train(data, out, "--arms", "baseline,online", "--per-prompt", "--leave-one-out", "--repeats", "2",
                 "--epochs", "2")
    arms = ["baseline", "online", "prompt: autumn", "prompt: snowy", "without: autumn", "without: snowy"]
    assert "plan: 6 arm(s) × 2 seed(s) × 2 epoch(s) = 24 arm-epochs" in proc.stdout
    assert "estimate from the first epoch" in proc.stdout and "[24/24 arm-epochs" in proc.stdout

    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == ["arm", "seed", "epoch", "p", "loss", "val_loss", "top1", "top5", "train_images",
                             "seconds"]
    assert [(r["arm"], int(r["seed"]), int(r["epoch"])) for r in rows] == [
        (a, s, e) for a in arms for s in (0, 1) for e in (1, 2)]
    final = {(r["arm"], int(r["seed"])): float(r["top1"]) for r in rows if r["epoch"] == "2"}
    # the seed changes the run: the baseline's two seeds differ in their losses
    base_losses = [r["loss"] for r in rows if r["arm"] == "baseline" and r["epoch"] == "1"]
    assert base_losses[0] != base_losses[1]

    per_class = read_csv(out / "per_class.csv")
    assert len(per_class) == len(rows) * 3
    for r in rows:  # the per-class rows add up to the overall top-1
        mine = [c for c in per_class if (c["arm"], c["seed"], c["epoch"]) == (r["arm"], r["seed"], r["epoch"])]
        assert sum(int(c["images"]) for c in mine) == 9
        assert 100 * sum(int(c["correct"]) for c in mine) / 9 == pytest.approx(float(r["top1"]), abs=1e-3)

    summary = (out / "summary.md").read_text(encoding="utf-8")
    for arm in arms[1:]:
        expected = paired_gain([final[(arm, 0)], final[(arm, 1)]], [final[("baseline", 0)], final[("baseline", 1)]])
        line = next(x for x in summary.splitlines() if x.startswith(f"| {arm} |"))
        assert expected.text() in line, (line, expected.text())
    assert re.search(r"Within the noise|beyond the noise", summary)
    assert "## Per class" in summary

    for name in ("curves.png", "prompt_gains.png", "gains.png"):
        with Image.open(out / name) as png:
            assert png.format == "PNG" and png.size[0] >= 400

    with sqlite3.connect(data / "ws" / "manifest.sqlite") as conn:
        stored = conn.execute("SELECT prompt, kind, gain, low, high, repeats, model, epochs FROM prompt_gains "
                              "ORDER BY id").fetchall()
    alone = {r[0]: r for r in stored if r[1] == "alone"}
    assert set(alone) == set(PROMPTS)
    for prompt, row in alone.items():
        g = paired_gain([final[(f"prompt: {prompt}", s)] for s in (0, 1)], [final[("baseline", s)] for s in (0, 1)])
        assert row[2:5] == pytest.approx((g.mean, g.low, g.high)) and row[5:] == (2, "resnet-tiny", 2)
    loo = {r[0]: r for r in stored if r[1] == "leave-one-out"}
    assert set(loo) == set(PROMPTS)  # online − without: the prompt's contribution
    g = paired_gain([final[("online", s)] for s in (0, 1)], [final[("without: autumn", s)] for s in (0, 1)])
    assert loo["autumn"][2] == pytest.approx(g.mean)
    assert "stored 4 prompt gain(s)" in proc.stdout

    report = run_cli("report", "--workspace", str(data / "ws"), timeout=120)  # the prompt report lists the gain
    assert report.returncode == 0, report.stderr
    header = next(x for x in report.stdout.splitlines()[1:] if x.startswith("prompt "))
    assert header.split()[-1] == "gain"
    for prompt, row in alone.items():
        line = next(x for x in report.stdout.splitlines() if x.startswith(prompt + " "))
        assert line.endswith(f"{row[2]:+.2f} [{row[3]:+.2f}, {row[4]:+.2f}] (2 seeds)"), line


def test_one_seed_says_the_interval_is_unknown(data, tmp_path):
    out = tmp_path / "one"
    train(data, out, "--arms", "baseline", "--per-prompt", "--epochs", "1", "--no-record")
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "interval unknown: 1 seed" in summary and "With one seed the interval is unknown" in summary
    assert (out / "prompt_gains.png").is_file() and (out / "gains.png").is_file()


def test_p_and_lam_sweeps_and_a_p_schedule_become_arms(data, tmp_path):
    out = tmp_path / "sweep"
    train(data, out, "--arms", "baseline,online", "--p", "0.25,0.75", "--lam", "0.1", "0.1,0.3", "--p-schedule",
          "linear:0.1-0.5", "--epochs", "3")
    rows = read_csv(out / "results.csv")
    names = list(dict.fromkeys(r["arm"] for r in rows))
    assert names == ["baseline", "online p=0.25 λ=0.1", "online p=0.25 λ=0.1-0.3", "online p=0.75 λ=0.1",
                     "online p=0.75 λ=0.1-0.3", "online p=linear:0.1-0.5"]
    ps = {(r["arm"], int(r["epoch"])): float(r["p"]) for r in rows}
    assert [ps[("online p=linear:0.1-0.5", e)] for e in (1, 2, 3)] == pytest.approx([0.1, 0.3, 0.5])
    assert ps[("online p=0.75 λ=0.1", 2)] == 0.75 and ps[("baseline", 3)] == 0.0
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert all(f"| {n} |" in summary for n in names)
    assert not (out / "prompt_gains.png").exists()  # no per-prompt arm


def test_a_schedule_really_changes_the_share_of_remixed_images(data):
    """What the scheduled arm trains on: epoch 1 at p=0.1 re-mixes far fewer items than epoch 3 at p=0.9."""
    ds = DiffuseMixDataset(data / "ws", p=0.0, size=SIZE, fractals=FRACTALS)
    shares = []
    for epoch, p in ((1, 0.1), (3, 0.9)):
        ds.set_epoch(epoch)
        ds.set_p(p)
        shares.append(sum(ds.draw(i, 2)[0].augment for i in range(len(ds))) / len(ds))
    assert shares[0] < 0.4 < 0.6 < shares[1]
    assert torch.is_tensor(ds._p)
