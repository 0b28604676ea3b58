"""The cost estimate before a bulk run (``bulk/estimate.py``), driven as a user does: ``augment --estimate-only``
prints sources, augmentations to make (the missing ones only, on a resume), UNet evaluations per augmentation and
a calibrated time, and writes nothing; a real run prints the same estimate before it starts. The GPU's extra line
(the preset one step faster) and the refined rate are checked in-process with stand-in generators."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.bulk.estimate import Estimate, estimate_run, format_duration
from diffusemix_core.bulk.options import AugmentOptions
from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.engine.generation import GenerationResult, GenerationSettings
from diffusemix_core.errors import DiffuseMixError
from diffusemix_core.workspace.folder import Workspace
from helpers import manifest_count, run_cli

IMAGES = 5  # in two class folders
BASE = ["--model", "tiny-random", "--resolution", "64", "--scorer", "none", "--no-progress"]


@pytest.fixture(scope="module")
def train(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "train"
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        folder = root / ("cat" if i < 3 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def numbers(stdout: str) -> dict[str, float]:
    """The figures of a printed estimate."""
    found = {
        "sources": re.search(r"estimate: (\d+) source images", stdout),
        "to_make": re.search(r"(\d+) augmentations to make", stdout),
        "already": re.search(r"(\d+) already in the workspace", stdout),
        "evaluations": re.search(r"UNet evaluations per augmentation: (\d+) ", stdout),
        "total_evaluations": re.search(r"([\d,]+) for the run\n", stdout),
    }
    assert all(found.values()), stdout
    return {name: int(match.group(1).replace(",", "")) for name, match in found.items()}


def augment(train: Path, ws: Path, *flags) -> tuple[int, str, str]:
    result = run_cli("augment", "--train-dir", train, "--workspace", ws, *BASE, *flags)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize(("flags", "evaluations"), [
    (["--steps", "2"], 6),  # 2 steps x 3 guidance branches
    (["--steps", "2", "--image-guidance-scale", "1.0"], 4),  # the unconditional branch cancels
    (["--preset", "fastest"], 10),  # 5 steps x 2 branches
])
def test_estimate_only_prints_the_cost_and_writes_nothing(train, tmp_path, flags, evaluations):
    ws = tmp_path / "ws"
    code, out, err = augment(train, ws, "--per-image", "2", "--estimate-only", *flags)
    assert code == 0, err[-3000:]
    figures = numbers(out)
    assert figures == {"sources": IMAGES, "to_make": 2 * IMAGES, "already": 0, "evaluations": evaluations,
                       "total_evaluations": 2 * IMAGES * evaluations}
    seconds = re.search(r"time: about .* for the run on cpu \(([\d.e-]+) s per augmentation, 1 timed", out)
    assert seconds and float(seconds.group(1)) > 0, out  # measured, not made up
    assert "one step faster" not in out  # that line is for a GPU
    assert "nothing was made" in out
    assert not ws.exists()  # no workspace was created for an estimate


def test_a_resume_estimates_the_missing_slots_only_and_the_run_prints_it_first(train, tmp_path):
    ws = tmp_path / "ws"
    code, out, err = augment(train, ws, "--steps", "2", "--per-image", "1")
    assert code == 0, err[-3000:]
    assert numbers(out)["to_make"] == IMAGES
    assert out.index("estimate:") < out.index("augmentations added")  # said before the run, not after
    assert manifest_count(ws) == IMAGES

    code, out, err = augment(train, ws, "--steps", "2", "--per-image", "3", "--estimate-only")
    assert code == 0, err[-3000:]
    assert numbers(out) == {"sources": IMAGES, "to_make": 2 * IMAGES, "already": IMAGES, "evaluations": 6,
                            "total_evaluations": 2 * IMAGES * 6}
    assert manifest_count(ws) == IMAGES and manifest_count(ws, "generations") == IMAGES  # nothing was added

    code, out, err = augment(train, ws, "--steps", "2", "--per-image", "3")
    assert code == 0, err[-3000:]
    assert numbers(out)["to_make"] == 2 * IMAGES and f"{2 * IMAGES} augmentations added" in out
    code, out, err = augment(train, ws, "--steps", "2", "--per-image", "3", "--estimate-only")
    assert numbers(out)["to_make"] == 0 and "time:" not in out  # nothing to make, nothing to time


# ------------------------------------------------------------------------------------------------ in-process
class StandIn:
    """A generator that reports a device and spends `seconds` per request (Î = I): the calibration's clock."""

    def __init__(self, settings: GenerationSettings, device: str, seconds: float = 0.0, load_seconds: float = 0.0):
        self.settings, self.device, self.seconds, self.load_seconds = settings, device, seconds, load_seconds
        self.calls: list[int] = []
        self.loaded = False

    def load(self) -> None:
        if not self.loaded:
            time.sleep(self.load_seconds)
            self.loaded = True

    def clear_caches(self) -> None:
        pass

    def auto_batch_size(self) -> int:
        return 2

    def generate(self, requests, **kwargs):
        self.calls.append(len(requests))
        time.sleep(self.seconds * len(requests))
        return [GenerationResult(image=r.image.copy(), used_seed=r.seed, retries=0) for r in requests]


def test_on_a_gpu_the_preset_one_step_faster_is_estimated_from_the_same_calibration(train):
    settings = GenerationSettings(model="tiny-random", resolution=64, device="cpu")  # the reference preset
    generator = StandIn(settings, "cuda:0", seconds=0.05)
    options = AugmentOptions(settings=settings, per_image=2, batch_size=3)
    estimate = estimate_run(train, options, generator=generator)
    assert generator.calls == [3, 3]  # one untimed batch at the run's batch size, then the timed one
    assert estimate.preset == "reference" and estimate.unet_evaluations == 60
    assert 0.05 <= estimate.seconds_per_augmentation < 0.5 and estimate.calibrated_on == 3
    assert estimate.faster.preset == "fast" and estimate.faster.unet_evaluations == 30
    assert estimate.faster.seconds_per_augmentation == pytest.approx(estimate.seconds_per_augmentation / 2)
    text = estimate.format()
    assert "on cuda:0" in text and "preset fast (one step faster): 30 UNet evaluations per augmentation" in text

    on_gpu = AugmentOptions(settings=GenerationSettings(model="tiny-random", resolution=64, device="cuda"))
    fast = estimate_run(train, on_gpu, calibrate=False, preset="fast")
    assert fast.seconds_per_augmentation is None and fast.faster.preset == "fastest"
    assert "preset fastest (one step faster): 10 UNet evaluations per augmentation\n" in fast.format() + "\n"
    assert estimate_run(train, on_gpu, calibrate=False, preset="fastest").faster is None  # lcm needs an adapter


def test_a_calibration_batch_that_fails_leaves_the_time_unmeasured_and_says_why(train):
    class Degenerate(StandIn):
        def generate(self, requests, **kwargs):
            raise DiffuseMixError("degenerate output (all black) for seeds 1 to 4")

    settings = GenerationSettings(model="tiny-random", resolution=64, device="cpu")
    estimate = estimate_run(train, AugmentOptions(settings=settings), generator=Degenerate(settings, "cpu"))
    assert estimate.seconds_per_augmentation is None and estimate.to_make == IMAGES
    assert "time: not measured: the calibration batch failed (degenerate output" in estimate.format()


def test_feature_caching_and_plain_words():
    estimate = Estimate(sources=10, per_source=3, to_make=25, scheduler="euler-a", steps=20, branches=3,
                        unet_evaluations=60, deep_evaluations=21, device="cpu", seconds_per_augmentation=12.0,
                        calibrated_on=1)
    assert estimate.already == 5 and estimate.total_seconds == 300 and estimate.total_unet_evaluations == 1500
    assert "21 of them run the deep blocks" in estimate.format() and "about 5m00s for the run" in estimate.format()
    assert [format_duration(s) for s in (0.0314, 4.24, 185, 7620, 3 * 86400 + 4 * 3600)] == [
        "0.031 s", "4.2 s", "3m05s", "2h07m", "3d04h"]


def test_the_runs_rate_leaves_the_models_loading_out(train, tmp_path):
    """The progress line's rate and time left refine the estimate from the measured work, not the load."""
    settings = GenerationSettings(model="tiny-random", resolution=64, device="cpu")
    generator = StandIn(settings, "cpu", seconds=0.01, load_seconds=1.5)
    reports = []
    summary = run_augment(Workspace(tmp_path / "ws"), train, AugmentOptions(settings=settings, batch_size=5),
                          generator=generator, progress=reports.append)
    assert summary.augmentations_added == IMAGES and summary.load_seconds >= 1.5
    last = reports[-1]
    assert last.done == IMAGES and last.seconds < summary.seconds - 1.4
    assert "0 s left" in last.describe() or "0m00s left" in last.describe()
