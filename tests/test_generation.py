"""Generation on the tiny-random model: reproducibility, sizes, equality with the stock pipeline, batching,
caching counters, degenerate-output retries and the offline error for the default model."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusemix_core.errors import (
    BadArgumentError,
    DiffuseMixError,
    ModelUnavailableError,
)
from diffusemix_core.engine.generation import DEFAULT_MODEL, GenerationRequest, GenerationSettings, working_size
from diffusemix_core.engine.pix2pix import Pix2PixGenerator
from diffusemix_core.engine.test_models import TINY_TOKENIZER_DIR, build_tiny_random_pipeline, write_tiny_tokenizer_files

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT = "A transformed version of image into autumn"
RES, STEPS = 64, 4


def settings(**overrides) -> GenerationSettings:
    base = dict(model="tiny-random", steps=STEPS, resolution=RES, device="cpu")
    return GenerationSettings(**{**base, **overrides})


def fresh_generator(**overrides) -> Pix2PixGenerator:
    """A generator with its own counters and caches (the tiny pipeline itself is memoised and shared)."""
    gen = Pix2PixGenerator(settings(**overrides))
    gen.load()
    return gen


def make_image(seed: int, h: int, w: int) -> np.ndarray:
    """A smooth random RGB image (low-frequency noise upsampled), so resizing behaves like on a photo."""
    small = np.random.default_rng(seed).integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def request(img: np.ndarray, key: str, seed: int, prompt: str = PROMPT) -> GenerationRequest:
    return GenerationRequest(image=img, image_key=key, prompt_text=prompt, seed=seed)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


# ------------------------------------------------------------------------------------------------ settings
def test_settings_defaults_are_the_documented_ones():
    s = GenerationSettings()
    assert (s.model, s.steps, s.guidance_scale, s.image_guidance_scale, s.resolution) == (
        DEFAULT_MODEL, 20, 4.0, 1.5, 512)
    assert (s.device, s.dtype, s.revision) == ("auto", "auto", None)
    key = s.cache_key()
    assert json.loads(json.dumps(key)) == key
    assert {"model", "revision", "steps", "guidance_scale", "image_guidance_scale", "resolution"} <= set(key)
    assert key != GenerationSettings(steps=21).cache_key()
    assert key != GenerationSettings(image_guidance_scale=1.2).cache_key()
    assert key == GenerationSettings(device="cpu").cache_key()  # where it runs does not name the result
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 3  # type: ignore[misc]


def test_auto_dtype_is_float32_on_cpu():
    assert settings(dtype="auto").resolved_dtype() == "float32"
    assert settings(dtype="bfloat16").resolved_dtype() == "bfloat16"


@pytest.mark.parametrize(
    "field, value",
    [("steps", 0), ("steps", -3), ("steps", 2.5), ("steps", True), ("steps", 5000),
     ("guidance_scale", -1.0), ("guidance_scale", float("nan")), ("image_guidance_scale", float("inf")),
     ("resolution", 100), ("resolution", 0), ("resolution", 56), ("resolution", 8192), ("resolution", 512.0),
     ("device", "gpu"), ("device", "cuda:x"), ("dtype", "float64"), ("model", ""), ("model", "   "),
     ("revision", "")],
)
def test_settings_reject_bad_values(field, value):
    with pytest.raises(BadArgumentError) as info:
        settings(**{field: value})
    assert repr(value) in str(info.value) or str(value) in str(info.value)


@pytest.mark.parametrize("h, w", [(45, 67), (67, 45), (64, 64), (512, 384), (1000, 10), (7, 9), (1, 1)])
@pytest.mark.parametrize("resolution", [64, 512])
def test_working_size_keeps_aspect_and_multiples_of_8(h, w, resolution):
    wh, ww = working_size(h, w, resolution)
    assert wh % 8 == 0 and ww % 8 == 0 and min(wh, ww) >= 8
    assert max(wh, ww) == resolution
    short_exact = min(h, w) * resolution / max(h, w)
    assert abs(min(wh, ww) - max(8.0, short_exact)) <= 4  # rounded to the nearest multiple of 8
    assert (wh >= ww) == (h >= w)


# ------------------------------------------------------------------------------------------------ tokenizer and model
def test_shipped_tokenizer_files_are_regenerated_identically(tmp_path):
    write_tiny_tokenizer_files(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / name).read_bytes() == (TINY_TOKENIZER_DIR / name).read_bytes()
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 514 and vocab["<|startoftext|>"] == 512 and vocab["<|endoftext|>"] == 513


def test_tiny_tokenizer_round_trips_text(tiny_generator):
    tok = tiny_generator.pipeline.tokenizer
    ids = tok(PROMPT, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[0] == 512 and 513 in ids
    assert tok.decode(ids, skip_special_tokens=True).strip() == PROMPT.lower()


def test_tiny_random_pipeline_is_identical_across_builds_and_leaves_global_rng_alone():
    before = torch.random.get_rng_state()
    a, b = build_tiny_random_pipeline(), build_tiny_random_pipeline()
    assert torch.equal(before, torch.random.get_rng_state())
    for name in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    other = build_tiny_random_pipeline(seed=1).unet.state_dict()
    assert not all(torch.equal(a.unet.state_dict()[k], other[k]) for k in other)


def test_tiny_random_shapes(tiny_generator):
    pipe = tiny_generator.pipeline
    assert pipe.unet.config.in_channels == 8 and pipe.unet.config.out_channels == 4
    assert pipe.vae_scale_factor == 8
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert pipe.safety_checker is None
    assert tiny_generator.is_test_model and tiny_generator.model_id == "tiny-random"


# ------------------------------------------------------------------------------------------------ reproducibility
def test_same_seed_same_bytes_different_seed_differs(tiny_generator):
    img = make_image(0, 45, 67)
    first = tiny_generator.generate([request(img, "a", 11)])[0]
    again = fresh_generator().generate([request(img, "a", 11)])[0]  # cold caches, new generator
    cached = tiny_generator.generate([request(img, "a", 11)])[0]  # warm caches
    assert first.image.tobytes() == again.image.tobytes() == cached.image.tobytes()
    assert (first.used_seed, first.retries) == (11, 0)
    other = tiny_generator.generate([request(img, "a", 12)])[0]
    assert max_diff(first.image, other.image) > 20


def test_prompt_changes_the_output(tiny_generator):
    img = make_image(1, 64, 64)
    a, b = tiny_generator.generate([request(img, "p", 3, PROMPT), request(img, "p", 3, "A transformed version of image into snowy")])
    assert max_diff(a.image, b.image) > 0


@pytest.mark.parametrize("h, w", [(45, 67), (67, 45), (64, 64), (13, 200), (7, 9), (130, 97)])
def test_output_has_the_source_shape(tiny_generator, h, w):
    result = tiny_generator.generate([request(make_image(2, h, w), f"shape-{h}x{w}", 5)])[0]
    assert result.image.shape == (h, w, 3) and result.image.dtype == np.uint8
    assert result.image.std() > 1  # not a flat image


# ------------------------------------------------------------------------------------------------ equals the stock pipeline
@pytest.mark.parametrize("source_hw", [(40, 64), (45, 67)])
@pytest.mark.parametrize("scales", [(4.0, 1.5), (7.5, 1.2), (1.0, 1.0)])  # (1, 1): no guidance branch
def test_loop_equals_stock_pipeline_call(source_hw, scales):
    g, ig = scales
    gen = fresh_generator(guidance_scale=g, image_guidance_scale=ig)
    img = make_image(3, *source_hw)
    ours = gen.generate([request(img, "stock", 21)])[0].image

    wh, ww = gen.working_size(*source_hw)
    working = np.asarray(Image.fromarray(img).resize((ww, wh), Image.LANCZOS)) if (wh, ww) != source_hw else img
    stock = gen.pipeline(
        prompt=PROMPT, image=Image.fromarray(working), num_inference_steps=STEPS, guidance_scale=g,
        image_guidance_scale=ig, generator=torch.Generator("cpu").manual_seed(21), output_type="np",
    ).images[0]
    stock_u8 = (stock * 255).round().astype(np.uint8)
    if (wh, ww) != source_hw:
        stock_u8 = np.asarray(Image.fromarray(stock_u8).resize(source_hw[::-1], Image.LANCZOS))
    assert ours.shape == stock_u8.shape
    assert max_diff(ours, stock_u8) <= 2
    # the comparison can fail: another seed gives a clearly different image
    other = gen.generate([request(img, "stock", 22)])[0].image
    assert max_diff(other, stock_u8) > 20


def test_batch_composition_does_not_change_a_result():
    gen = fresh_generator()
    imgs = [make_image(10 + i, 48, 64) for i in range(3)]
    reqs = [request(imgs[0], "i0", 1), request(imgs[1], "i1", 2), request(imgs[2], "i2", 3),
            request(imgs[0], "i0", 4, "A transformed version of image into mosaic")]
    batched = gen.generate(reqs, batch_size=4)
    alone = [gen.generate([r], batch_size=1)[0] for r in reqs]
    reversed_ = gen.generate(reqs[::-1], batch_size=3)[::-1]
    for a, b, c in zip(batched, alone, reversed_):
        assert max_diff(a.image, b.image) <= 2
        assert max_diff(a.image, c.image) <= 2


def test_results_come_back_in_request_order_across_sizes():
    gen = fresh_generator()
    a, b = make_image(20, 45, 67), make_image(21, 64, 40)
    reqs = [request(a, "a", 1), request(b, "b", 1), request(a, "a", 2), request(b, "b", 2)]
    results = gen.generate(reqs, batch_size=2)
    assert [r.image.shape[:2] for r in results] == [(45, 67), (64, 40), (45, 67), (64, 40)]
    for r, res in zip(reqs, results):
        assert max_diff(res.image, gen.generate([r])[0].image) <= 2


# ------------------------------------------------------------------------------------------------ caching counters
def test_counters_show_one_encoding_per_prompt_and_per_image():
    gen = fresh_generator()
    n_images, prompts = 3, [f"A transformed version of image into {p}" for p in ("autumn", "snowy")]
    imgs = [make_image(30 + i, 40, 64) for i in range(n_images)]
    reqs = [request(img, f"img{i}", 7, p) for i, img in enumerate(imgs) for p in prompts]
    calls = []
    gen.generate(reqs, batch_size=4, progress=lambda done, total: calls.append((done, total)))
    batches = math.ceil(len(reqs) / 4)
    assert gen.counters == {
        "text_encoder": len(prompts) + 1,  # each prompt once, plus the empty negative prompt once
        "vae_encode": n_images,
        "unet": STEPS * batches,  # the three guidance branches share one UNet call per step
        "unet_rows": STEPS * 3 * len(reqs),  # 60 evaluations per augmentation at 20 steps
        "unet_shallow_rows": 0,
        "vae_decode": batches,
    }
    assert calls[-1] == (len(reqs), len(reqs)) and len(calls) == batches
    gen.generate(reqs[:2], batch_size=4)  # warm caches: no new encodings
    assert gen.counters["text_encoder"] == len(prompts) + 1 and gen.counters["vae_encode"] == n_images


def test_unet_calls_with_mixed_sizes():
    gen = fresh_generator()
    reqs = [request(make_image(40, 40, 64), "x", 1), request(make_image(41, 64, 40), "y", 1),
            request(make_image(40, 40, 64), "x", 2)]
    gen.generate(reqs, batch_size=8)
    assert gen.counters["unet"] == STEPS * 2  # one batch per working size
    assert gen.counters["vae_encode"] == 2


# ------------------------------------------------------------------------------------------------ degenerate outputs
def _patch_decode(monkeypatch, vae, fill: float, times: int | None):
    """Make vae.decode return `fill` everywhere for its first `times` calls (None: always)."""
    original = vae.decode
    state = {"calls": 0}

    def decode(*args, **kwargs):
        state["calls"] += 1
        out = original(*args, **kwargs)
        if times is None or state["calls"] <= times:
            return (torch.full_like(out[0], fill),)
        return out

    monkeypatch.setattr(vae, "decode", decode)
    return state


@pytest.fixture
def private_generator():
    """A generator on its own (unshared) tiny pipeline, safe to monkeypatch."""
    gen = Pix2PixGenerator(settings(), pipeline=build_tiny_random_pipeline())
    gen.load()
    return gen


@pytest.mark.parametrize("fill", [float("nan"), -1.0])  # NaN, and -1 which postprocesses to all black
def test_degenerate_output_is_retried_with_the_next_seed(private_generator, monkeypatch, fill):
    img = make_image(50, 48, 64)
    expected = private_generator.generate([request(img, "d", 9)])[0]  # what seed 9 gives normally
    _patch_decode(monkeypatch, private_generator.pipeline.vae, fill, times=1)
    result = private_generator.generate([request(img, "d", 8)])[0]
    assert (result.used_seed, result.retries) == (9, 1)
    assert result.image.tobytes() == expected.image.tobytes()


@pytest.mark.parametrize("fill, reason", [(float("nan"), "NaN"), (-1.0, "all black")])
def test_always_degenerate_output_raises_with_the_reason(private_generator, monkeypatch, fill, reason):
    state = _patch_decode(monkeypatch, private_generator.pipeline.vae, fill, times=None)
    with pytest.raises(DiffuseMixError) as info:
        private_generator.generate([request(make_image(51, 48, 64), "bad-image", 3)])
    message = str(info.value)
    assert reason in message and "bad-image" in message and "3 to 6" in message and "float32" in message
    assert state["calls"] == 4  # first try + 3 retries


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_requests_are_clear_errors(tiny_generator):
    with pytest.raises(BadArgumentError, match="uint8"):
        tiny_generator.generate([request(np.zeros((8, 8, 3), np.float32), "f", 1)])
    with pytest.raises(BadArgumentError, match="uint8"):
        tiny_generator.generate([request(np.zeros((8, 8), np.uint8), "g", 1)])
    with pytest.raises(BadArgumentError, match="seed"):
        tiny_generator.generate([request(make_image(0, 8, 8), "s", -1)])
    with pytest.raises(BadArgumentError, match="batch size"):
        tiny_generator.generate([request(make_image(0, 8, 8), "b", 1)], batch_size=0)
    assert tiny_generator.generate([]) == []


# ------------------------------------------------------------------------------------------------ model loading
def test_default_model_offline_with_empty_cache_fails_fast_in_process(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("DIFFUSEMIX_ALLOW_DOWNLOAD", raising=False)
    gen = Pix2PixGenerator(GenerationSettings(device="cpu"))
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as info:
        gen.load()
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert info.value.model == DEFAULT_MODEL
    assert DEFAULT_MODEL in message and "--model PATH" in message and "--model tiny-random" in message
    assert "HF_HUB_OFFLINE is set" in message  # conftest sets it: the message says so
    assert "\n" not in message
    # the download command huggingface_hub installs today (`hf`, not the gone `huggingface-cli`), and the whole cache
    # folder the model was looked for in
    assert f"`hf download {DEFAULT_MODEL}`" in message and "huggingface-cli" not in message
    assert f"cache {tmp_path / 'hub'} and" in message


def test_the_download_remedy_names_the_revision():
    from diffusemix_core.engine.model_loading import download_hint

    assert "`hf download org/model --revision v2`" in download_hint("org/model", revision="v2")
    assert "`hf download org/model`" in download_hint("org/model")


def test_loading_a_model_prints_nothing_about_torchvision(tmp_path):
    """Without torchvision (never installed here) transformers warns each time diffusers asks it for
    CLIPImageProcessor: loading and running the generator in a fresh process must not print that."""
    code = (
        "from diffusemix_core.engine.generation import GenerationSettings, GenerationRequest\n"
        "from diffusemix_core.engine.pix2pix import Pix2PixGenerator\n"
        "import numpy as np\n"
        "gen = Pix2PixGenerator(GenerationSettings(model='tiny-random', steps=1, resolution=64, device='cpu'))\n"
        "gen.generate([GenerationRequest(np.zeros((16, 16, 3), np.uint8) + 99, 'k', 'p', 1)])\n"
        "print('generated')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "generated", proc.stderr
    assert "torchvision" not in proc.stderr and "ImageProcessor" not in proc.stderr, proc.stderr


def test_uncached_model_with_downloads_on_but_no_reachable_hub_fails_fast(tmp_path):
    """Downloads on (no HF_HUB_OFFLINE) but the hub unreachable: a clear error, not a hang. The endpoint is a
    closed port on loopback, so the test sends nothing beyond this machine."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE", "DIFFUSEMIX_", "TRANSFORMERS_OFFLINE"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{closed_port}")
    # The heavy libraries are imported before the clock starts: the bound is on the load's own waiting (a loaded CI
    # machine once took 5 s for the imports alone), not on how fast this machine reads torch from disk.
    code = (
        "import time, torch, diffusers, huggingface_hub\n"
        "from diffusemix_core.engine.generation import GenerationSettings\n"
        "from diffusemix_core.engine.pix2pix import Pix2PixGenerator\n"
        "gen = Pix2PixGenerator(GenerationSettings(device='cpu'))\n"
        "start = time.perf_counter()\n"
        "try:\n"
        "    gen.load()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, round(time.perf_counter() - start, 2), exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    name, seconds, message = proc.stdout.strip().split(" ", 2)
    assert name == "ModelUnavailableError", proc.stdout + proc.stderr
    assert float(seconds) < 5
    assert "cannot be reached" in message and f"127.0.0.1:{closed_port}" in message and "--model PATH" in message
    assert "--model tiny-random" in message and "HF_HUB_OFFLINE" not in message  # not set there: not mentioned


def test_blackholed_hub_fails_after_the_probe_timeout_not_a_hang(tmp_path, monkeypatch):
    """A hub that swallows connection attempts (a firewall that drops packets) ends in the probe's 3-second timeout.
    The endpoint is a loopback listener whose accept queue is full, so the kernel drops further SYNs."""
    from huggingface_hub import constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        while True:  # fill the accept queue until a connect times out: from then on SYNs are dropped
            filler = socket.socket()
            filler.settimeout(0.5)
            try:
                filler.connect(("127.0.0.1", port))
            except OSError:
                filler.close()
                break
            fillers.append(filler)
            assert len(fillers) < 16, "the loopback listener never stopped accepting"
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("DIFFUSEMIX_ALLOW_DOWNLOAD", "1")
        gen = Pix2PixGenerator(GenerationSettings(device="cpu"))
        start = time.perf_counter()
        with pytest.raises(ModelUnavailableError, match="cannot be reached") as info:
            gen.load()
        elapsed = time.perf_counter() - start
    finally:
        for filler in fillers:
            filler.close()
        server.close()
    assert 2.5 < elapsed < 10, elapsed  # it waited for the probe's timeout, and no longer
    assert f"127.0.0.1:{port}" in str(info.value) and "--model PATH" in str(info.value)


def test_default_model_offline_with_empty_hf_home_fails_fast_in_a_fresh_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "DIFFUSEMIX_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    code = (
        "from diffusemix_core.engine.generation import GenerationSettings\n"
        "from diffusemix_core.engine.pix2pix import Pix2PixGenerator\n"
        "Pix2PixGenerator(GenerationSettings(device='cpu')).load()\n"
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    elapsed = time.perf_counter() - start
    assert proc.returncode != 0
    assert "ModelUnavailableError" in proc.stderr and "not available offline" in proc.stderr
    assert elapsed < 60  # imports of torch/diffusers dominate; the cache check itself is instant (test above)


@pytest.mark.parametrize("model", ["./no/such/folder", "/definitely/not/here", "a/b/c"])
def test_missing_folder_is_a_model_error(model):
    with pytest.raises(ModelUnavailableError, match="not a diffusers pipeline folder"):
        Pix2PixGenerator(settings(model=model)).load()


def test_local_folder_loads_and_gives_the_same_images(tmp_path, tiny_generator):
    folder = tmp_path / "tiny"
    build_tiny_random_pipeline().save_pretrained(folder)
    gen = fresh_generator(model=str(folder))
    assert not gen.is_test_model
    assert type(gen.pipeline.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    img = make_image(60, 40, 64)
    a = gen.generate([request(img, "f", 4)])[0].image
    b = tiny_generator.generate([request(img, "f", 4)])[0].image
    assert max_diff(a, b) <= 2


def test_a_given_pipeline_gets_the_euler_ancestral_scheduler():
    from diffusers import DDIMScheduler

    pipe = build_tiny_random_pipeline()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    gen = Pix2PixGenerator(settings(), pipeline=pipe)
    gen.load()
    assert type(gen.pipeline.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
