"""GPU readiness on the CPU: the float32 re-decode of a half-precision VAE that overflowed, the batch-size search,
and the wiring of torch.compile. (What a GPU makes of them is measured by bench/generation.py, not here.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusemix_core.engine import gpu_tuning, pix2pix
from diffusemix_core.errors import BadArgumentError
from diffusemix_core.engine.generation import GenerationRequest, GenerationSettings
from diffusemix_core.engine.pix2pix import Pix2PixGenerator
from diffusemix_core.engine.gpu_tuning import AUTO_CPU_BATCH_SIZE, choose_batch_size
from diffusemix_core.engine.test_models import build_tiny_random_pipeline

PROMPT = "A transformed version of image into snowy"


def image(seed: int = 0, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def bf16_generator() -> Pix2PixGenerator:
    pipe = build_tiny_random_pipeline().to(dtype=torch.bfloat16)
    gen = Pix2PixGenerator(GenerationSettings(model="tiny-random", steps=2, resolution=64, device="cpu",
                                              dtype="bfloat16"), pipeline=pipe)
    gen.load()
    return gen


def test_a_half_precision_vae_that_overflows_is_decoded_again_in_float32(monkeypatch):
    gen = bf16_generator()
    assert gen._decoder32 is not None  # made for a half-precision VAE only
    vae = gen.pipeline.vae
    original, calls = vae.decode, {"n": 0}

    def overflowing(latents, **kwargs):  # what float16 overflow looks like: finite latents, infinite pixels
        calls["n"] += 1
        out = original(latents, **kwargs)
        return (torch.full_like(out[0], float("inf")),)

    monkeypatch.setattr(vae, "decode", overflowing)
    req = GenerationRequest(image(1), "k", PROMPT, seed=5)
    result = gen.generate([req])[0]
    assert (result.used_seed, result.retries) == (5, 0)  # the batch is not failed, not retried with another seed
    assert calls["n"] == 1 and result.image.shape == req.image.shape and result.image.max() > 2
    # it is what the float32 copy of the VAE makes of the same latents
    latents = gen._denoise([gen_work(gen, req)])
    expected = gen._decoder32.decode(latents)[0]
    array = ((expected.float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    from diffusemix_core.engine.pix2pix import _resize

    assert np.array_equal(_resize(array, *req.image.shape[:2]), result.image)


def gen_work(gen, req):
    from diffusemix_core.engine.pix2pix import _Work

    return _Work(0, req, req.seed, gen.working_size(*req.image.shape[:2]))


def test_a_float32_vae_has_no_second_decoder(tiny_generator):
    assert tiny_generator._decoder32 is None


def linear_memory(fixed: int, per_image: int, capacity: int):
    """A fake GPU: peak memory fixed + per_image * b, out of memory beyond capacity."""
    def peak(b: int) -> int:
        need = fixed + per_image * b
        if need > capacity:
            raise MemoryError(f"{need} > {capacity}")
        return need
    return peak


@pytest.mark.parametrize("fixed, per_image, free, expected", [
    (4_000, 1_000, 100_000, 64),          # everything fits: capped at MAX_AUTO_BATCH_SIZE
    (4_000, 1_000, 20_000, 13),           # (0.85 * 20000 - 3000 - 1000 ...) // 1000
    (4_000, 1_000, 5_000, 1),             # only one image fits
    (9_000, 1_000, 10_000, 1),            # batch 1 is over the headroom already
])
def test_choose_batch_size_extrapolates_from_two_probes(fixed, per_image, free, expected):
    probes = []
    peak = linear_memory(fixed, per_image, capacity=free)

    def measured(b):
        probes.append(b)
        return peak(b)

    got = choose_batch_size(measured, free)
    budget = free * gpu_tuning.MEMORY_HEADROOM
    assert got == expected
    assert got == 1 or fixed + per_image * got <= budget  # within the headroom
    assert got == gpu_tuning.MAX_AUTO_BATCH_SIZE or got == 1 or fixed + per_image * (got + 1) > budget  # the largest
    assert probes[:2] == [1, 2][: len(probes)]


def test_choose_batch_size_halves_until_a_real_run_fits():
    tried = []

    def fits(b):
        tried.append(b)
        return b <= 10  # the real step needs more than the probes said

    assert choose_batch_size(linear_memory(1_000, 100, 100_000), 100_000, fits=fits) == 8
    assert tried == [64, 32, 16, 8]


def test_auto_batch_size_on_the_cpu_is_the_documented_default(tiny_generator):
    assert tiny_generator.auto_batch_size() == AUTO_CPU_BATCH_SIZE


def test_probe_step_runs_a_guided_step_and_a_decode(tiny_generator):
    before = dict(tiny_generator.counters)
    tiny_generator.probe_step(2, 64, 64)  # no error at batch 2; UNet and decoder calls are not counted as work
    after = tiny_generator.counters
    assert (after["unet"], after["vae_decode"]) == (before["unet"], before["vae_decode"])


def test_compile_wraps_the_generators_own_unet_not_the_shared_pipeline(monkeypatch):
    wrapped = []

    def fake_compile(unet):
        wrapped.append(unet)
        return unet  # the real torch.compile takes minutes on this CPU; the wiring is what is tested here

    monkeypatch.setattr(pix2pix, "compile_unet", fake_compile)  # the name the generator calls
    pipe = build_tiny_random_pipeline()
    gen = Pix2PixGenerator(GenerationSettings(model="tiny-random", steps=2, resolution=64, device="cpu",
                                              compile=True), pipeline=pipe)
    gen.load()
    assert wrapped == [pipe.unet] and gen._unet is pipe.unet
    plain = Pix2PixGenerator(GenerationSettings(model="tiny-random", steps=2, resolution=64, device="cpu"),
                             pipeline=build_tiny_random_pipeline())
    plain.load()
    assert len(wrapped) == 1  # only when asked
    with pytest.raises(BadArgumentError, match="compile"):
        GenerationSettings(compile="yes")
    assert "compile" not in GenerationSettings(compile=True).cache_key()  # the same Î, however it is computed
