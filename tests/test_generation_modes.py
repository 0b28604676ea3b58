"""The cost of an augmentation as a choice: exact guidance savings (2 and 1 branches), schedulers by name, feature
caching between steps, and what the manifest records. Each mode is checked against diffusers' stock pipeline run
with the same settings, or against the exact loop, on the tiny-random model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from diffusemix_core.engine.generation import SCHEDULERS, GenerationRequest, GenerationSettings
from diffusemix_core.engine.pix2pix import Pix2PixGenerator
from diffusemix_core.engine.presets import PRESETS, apply_preset, faster_preset, preset_table
from diffusemix_core.errors import BadArgumentError

PROMPT = "A transformed version of image into autumn"
RES, STEPS = 64, 6


def generator(**overrides) -> Pix2PixGenerator:
    gen = Pix2PixGenerator(GenerationSettings(**{"model": "tiny-random", "steps": STEPS, "resolution": RES,
                                                  "device": "cpu", **overrides}))
    gen.load()
    return gen


def image(seed: int = 3, h: int = 48, w: int = 64) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def requests(n: int = 2) -> list[GenerationRequest]:
    return [GenerationRequest(image=image(3 + i), image_key=f"k{i}", prompt_text=PROMPT, seed=11 + i) for i in range(n)]


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def stock(gen: Pix2PixGenerator, req: GenerationRequest, *, scheduler: str | None = None) -> np.ndarray:
    """diffusers' own pipeline call with the generator's settings (a pipeline of its own: the shared one is kept)."""
    import diffusers

    s = gen.settings
    components = dict(gen.pipeline.components)
    components["scheduler"] = getattr(diffusers, SCHEDULERS[scheduler or s.scheduler]).from_config(
        gen.pipeline.scheduler.config, **({"algorithm_type": "dpmsolver++"} if (scheduler or s.scheduler) == "dpm++" else {}))
    pipe = diffusers.StableDiffusionInstructPix2PixPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    h, w = gen.working_size(*req.image.shape[:2])
    out = pipe(prompt=req.prompt_text, image=Image.fromarray(req.image).resize((w, h), Image.LANCZOS),
               num_inference_steps=s.steps, guidance_scale=s.guidance_scale,
               image_guidance_scale=s.image_guidance_scale, generator=torch.Generator("cpu").manual_seed(req.seed),
               output_type="np").images[0]
    u8 = (out * 255).round().astype(np.uint8)
    return np.asarray(Image.fromarray(u8).resize(req.image.shape[1::-1], Image.LANCZOS))


# ------------------------------------------------------------------------------------------------ exact savings
@pytest.mark.parametrize("scales, branches", [((4.0, 1.5), 3), ((4.0, 1.0), 2), ((7.5, 1.0), 2), ((1.0, 1.0), 1)])
def test_guidance_runs_only_the_branches_its_formula_needs_and_equals_the_stock_three(scales, branches):
    g, ig = scales
    gen = generator(guidance_scale=g, image_guidance_scale=ig)
    assert gen.settings.guidance_branches() == branches
    reqs = requests(2)
    ours = gen.generate(reqs, batch_size=2)
    assert gen.counters["unet_rows"] == STEPS * branches * len(reqs) == gen.settings.unet_evaluations() * len(reqs)
    assert gen.counters["unet"] == STEPS  # one call per step for the batch
    for req, result in zip(reqs, ours):
        reference = stock(gen, req)  # the stock pipeline always runs 3 branches under guidance
        assert max_diff(result.image, reference) <= 2
        assert max_diff(gen.generate([GenerationRequest(req.image, req.image_key, PROMPT, req.seed + 5)])[0].image,
                        reference) > 20  # the comparison can fail


def test_two_branches_are_two_thirds_of_the_reference_evaluations():
    reference, two = GenerationSettings(), GenerationSettings(image_guidance_scale=1.0)
    assert (reference.unet_evaluations(), two.unet_evaluations()) == (60, 40)
    assert two.cache_key() != reference.cache_key()


# ------------------------------------------------------------------------------------------------ schedulers
@pytest.mark.parametrize("name", [n for n in SCHEDULERS if n != "euler-a"])
def test_every_scheduler_equals_the_stock_pipeline_with_that_scheduler(name):
    gen = generator(scheduler=name)
    req = requests(1)[0]
    ours = gen.generate([req])[0].image
    assert max_diff(ours, stock(gen, req)) <= 2
    assert max_diff(ours, generator().generate([req])[0].image) > 5  # another scheduler, another Î
    assert gen.settings.cache_key()["scheduler"] == SCHEDULERS[name]


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_is_deterministic_and_independent_of_the_batch(name):
    gen = generator(scheduler=name)
    reqs = requests(3)
    batched = gen.generate(reqs, batch_size=3)
    for req, result in zip(reqs, batched):
        assert max_diff(result.image, gen.generate([req], batch_size=1)[0].image) <= 2


def test_a_bad_scheduler_is_a_one_line_error():
    with pytest.raises(BadArgumentError, match="Bad scheduler 'heun'.*euler-a"):
        GenerationSettings(scheduler="heun")


# ------------------------------------------------------------------------------------------------ feature caching
def test_cache_interval_one_is_the_exact_loop():
    reqs = requests(2)
    plain = generator().generate(reqs)
    assert all(max_diff(a.image, b.image) == 0 for a, b in zip(plain, generator(cache_interval=1).generate(reqs)))


@pytest.mark.parametrize("interval", [2, 3])
def test_feature_caching_runs_the_deep_blocks_every_nth_step_only(interval):
    reqs = requests(2)
    gen = generator(cache_interval=interval)
    cached = gen.generate(reqs, batch_size=2)
    rows = 3 * len(reqs)
    full_steps = len(range(0, STEPS, interval))
    assert gen.counters["unet_rows"] == STEPS * rows
    assert gen.counters["unet_shallow_rows"] == (STEPS - full_steps) * rows
    assert gen.settings.deep_evaluations() * len(reqs) == full_steps * rows
    exact = generator().generate(reqs, batch_size=2)
    for a, b in zip(cached, exact):
        assert a.image.shape == b.image.shape and max_diff(a.image, b.image) > 0  # an approximation ...
        assert np.corrcoef(a.image.ravel(), b.image.ravel())[0, 1] > 0.5  # ... of the same image
    again = generator(cache_interval=interval).generate(reqs, batch_size=1)  # deterministic, batch-independent
    assert all(max_diff(a.image, b.image) <= 2 for a, b in zip(cached, again))
    unet = gen.pipeline.unet  # nothing left behind on the shared UNet
    assert not any(m._forward_hooks for m in unet.modules())
    assert gen.settings.cache_key()["cache_interval"] == interval
    assert "cache_interval" not in generator().settings.cache_key()


# ------------------------------------------------------------------------------------------------ presets
def test_presets_reach_their_evaluation_targets():
    table = {row["preset"]: row for row in preset_table()}
    assert table["reference"]["unet_evaluations"] == 60
    assert table["fast"]["vs_reference"] <= 1 / 2
    assert table["fastest"]["vs_reference"] <= 1 / 6
    assert apply_preset("reference") == GenerationSettings()  # the default is today's output
    assert faster_preset("reference") == "fast" and faster_preset("fast") == "fastest"
    assert faster_preset("fastest") is None
    with pytest.raises(BadArgumentError, match="needs a latent-consistency LoRA"):
        apply_preset("lcm")
    assert set(PRESETS) >= {"reference", "fast", "fastest"}


def test_a_flag_beside_a_preset_wins_over_it():
    s = apply_preset("fast", steps=12, image_guidance_scale=None)
    assert (s.scheduler, s.steps, s.image_guidance_scale) == ("dpm++", 12, 1.5)


def _augment(tmp_path, workspace, *flags):
    return subprocess.run([sys.executable, "-m", "diffusemix_core", "augment", "--train-dir", str(tmp_path / "src"), "--workspace",
                           str(workspace), "--model", "tiny-random", "--resolution", "64", "--per-image", "1",
                           "--device", "cpu", *flags], capture_output=True, text=True, timeout=600)


def test_the_manifest_records_how_each_image_was_made_and_presets_never_share_an_image(tmp_path):
    folder = tmp_path / "src" / "cat"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(image(30 + i)).save(folder / f"{i}.png")
    ws = tmp_path / "ws"
    first = _augment(tmp_path, ws, "--preset", "fastest", "--steps", "2")
    assert first.returncode == 0, first.stderr
    # a second slot per image under another preset: the first slots are kept, the new ones say how they were made
    second = _augment(tmp_path, ws, "--preset", "fast", "--steps", "2", "--cache-interval", "2", "--per-image", "2")
    assert second.returncode == 0, second.stderr
    import sqlite3

    with sqlite3.connect(ws / "manifest.sqlite") as db:
        settings = [json.loads(row[0]) for row in db.execute("SELECT settings FROM generations ORDER BY rowid")]
    assert len(settings) == 4
    made = [(s["scheduler"], s["steps"], s["image_guidance_scale"], s.get("cache_interval")) for s in settings]
    assert made == [("DPMSolverMultistepScheduler", 2, 1.0, None)] * 2 + [("DPMSolverMultistepScheduler", 2, 1.5, 2)] * 2
    bad = _augment(tmp_path, ws, "--scheduler", "heun")
    assert bad.returncode != 0 and "invalid choice: 'heun'" in bad.stderr and "Traceback" not in bad.stderr


def test_the_image_cache_key_differs_for_every_preset_and_setting():
    from diffusemix_core.workspace.manifest import generation_cache_key

    variants = [apply_preset(name) for name in ("reference", "fast", "fastest")]
    variants += [GenerationSettings(cache_interval=3), GenerationSettings(scheduler="unipc"),
                 GenerationSettings(image_guidance_scale=1.0)]
    keys = {generation_cache_key("0" * 64, PROMPT, v.cache_key(), 7) for v in variants}
    assert len(keys) == len(variants)
    assert len(set(variants)) == len(variants)  # the app's generators (keyed by settings) differ too
