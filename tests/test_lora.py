"""LoRA adapters (``--lora``): a random LoRA for the tiny-random UNet, built offline, changes Î; it is fused into a
UNet copy of its own, never into the shared pipeline; it is recorded by name and content hash, so an Î made with one
adapter is never reused for another; bad adapters and ``--preset lcm`` without one fail in one line."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusemix_core.engine.generation import GenerationRequest, GenerationSettings
from diffusemix_core.engine.lora import apply_lora, lora_identity
from diffusemix_core.engine.model_loading import load_pipeline
from diffusemix_core.engine.pix2pix import Pix2PixGenerator
from diffusemix_core.engine.test_models import build_tiny_random_lora
from diffusemix_core.errors import BadArgumentError, ModelUnavailableError
from helpers import TINY, error_line, run_cli

PROMPT = "A transformed version of image into autumn"
SEEDS = (3, 11)


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    return {"a": build_tiny_random_lora(root / "lora-a", seed=0), "b": build_tiny_random_lora(root / "lora-b", seed=1),
            "text": build_tiny_random_lora(root / "lora-text", seed=0, text_encoder=True)}


def settings(**changes) -> GenerationSettings:
    return GenerationSettings(**{"model": "tiny-random", "steps": 2, "resolution": 64, "device": "cpu", **changes})


def requests() -> list[GenerationRequest]:
    image = np.asarray(Image.fromarray(np.random.default_rng(5).integers(0, 256, (6, 8, 3), dtype=np.uint8))
                       .resize((64, 48), Image.BICUBIC))
    return [GenerationRequest(image=image, image_key="src", prompt_text=PROMPT, seed=s) for s in SEEDS]


def generate(**changes) -> list[np.ndarray]:
    """Î of the fixed requests by a new generator (its own caches; pipelines are memoised and shared)."""
    return [r.image for r in Pix2PixGenerator(settings(**changes)).generate(requests(), batch_size=2)]


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    return max(int(np.abs(x.astype(np.int16) - y.astype(np.int16)).max()) for x, y in zip(a, b))


def shared_pipeline():
    return load_pipeline("tiny-random", device="cpu", dtype="float32")


# --------------------------------------------------------------------------------------------------- engine
def test_builder_writes_a_deterministic_lora_that_diffusers_reads_back(loras, tmp_path):
    weights = loras["a"] / "pytorch_lora_weights.safetensors"
    assert sorted(p.name for p in loras["a"].iterdir()) == ["pytorch_lora_weights.safetensors"]
    again = build_tiny_random_lora(tmp_path / "again", seed=0) / "pytorch_lora_weights.safetensors"
    assert again.read_bytes() == weights.read_bytes()
    assert (loras["b"] / weights.name).read_bytes() != weights.read_bytes()
    state, _ = type(shared_pipeline()).lora_state_dict(str(loras["a"]))
    assert {k.rsplit(".", 3)[-3] for k in state} == {"to_q", "to_k", "to_v", "0"}  # to_out.0
    assert all(float(v.abs().max()) > 0 for k, v in state.items() if "lora_B" in k)  # B not zero: it acts


def test_a_lora_changes_the_output_deterministically_and_generators_share_it(loras):
    plain = generate()
    with_a = generate(lora=str(loras["a"]))
    assert max_diff(plain, with_a) > 10
    assert max_diff(with_a, generate(lora=str(loras["a"]))) == 0  # same LoRA + seeds: the same Î
    assert max_diff(with_a, generate(lora=str(loras["b"]))) > 10  # another adapter, another Î
    first, second = (Pix2PixGenerator(settings(lora=str(loras["a"]))) for _ in range(2))
    assert first.pipeline is second.pipeline  # one adapted pipeline per (base, adapter, scale)
    assert first.pipeline is not shared_pipeline()


def test_scale_zero_equals_no_lora_and_the_scale_changes_the_output(loras):
    plain = generate()
    assert max_diff(plain, generate(lora=str(loras["a"]), lora_scale=0.0)) == 0  # fused at 0: the base weights
    half, full = generate(lora=str(loras["a"]), lora_scale=0.5), generate(lora=str(loras["a"]))
    assert max_diff(half, full) > 5 and max_diff(half, plain) > 5


def test_the_shared_pipeline_is_never_changed(loras):
    shared = shared_pipeline()
    before = {name: {k: v.clone() for k, v in getattr(shared, name).state_dict().items()}
              for name in ("unet", "text_encoder", "vae")}
    unet_modules = [type(m) for m in shared.unet.modules()]
    plain_before = generate()

    adapted = apply_lora(shared, str(loras["a"]), 1.0)
    generate(lora=str(loras["a"]))
    generate(lora=str(loras["b"]), lora_scale=2.0)
    with_text = generate(lora=str(loras["text"]))  # an adapter for the text encoder too: it gets its own copy
    assert max_diff(with_text, generate(lora=str(loras["a"]))) > 5  # same UNet part, the text part acts
    assert apply_lora(shared, str(loras["text"]), 1.0).text_encoder is not shared.text_encoder

    for name, weights in before.items():
        after = getattr(shared, name).state_dict()
        assert after.keys() == weights.keys() and all(torch.equal(after[k], weights[k]) for k in weights), name
    assert [type(m) for m in shared.unet.modules()] == unet_modules  # no PEFT layers left in it
    assert max_diff(plain_before, generate()) == 0  # a plain generator after the LoRA ones: the same Î
    # the adapted pipeline shares the frozen parts and owns its UNet, fused (no PEFT layers per step)
    assert adapted.vae is shared.vae and adapted.text_encoder is shared.text_encoder
    assert adapted.tokenizer is shared.tokenizer and adapted.unet is not shared.unet
    assert [type(m) for m in adapted.unet.modules()] == unet_modules


def test_cache_key_has_the_name_and_content_hash(loras, tmp_path):
    folder = build_tiny_random_lora(tmp_path / "mine", seed=0)
    file = folder / "pytorch_lora_weights.safetensors"
    key = settings(lora=str(folder), lora_scale=0.5).cache_key()
    assert key["lora"] == {"name": "mine", "sha256": hashlib.sha256(file.read_bytes()).hexdigest(), "scale": 0.5}
    assert settings(lora=str(file)).cache_key()["lora"]["name"] == "pytorch_lora_weights.safetensors"
    assert "lora" not in settings().cache_key()  # keys of workspaces made without adapters stay as they were
    made_before = generate(lora=str(folder))

    build_tiny_random_lora(folder, seed=1)  # the same name, other bytes
    changed = settings(lora=str(folder), lora_scale=0.5).cache_key()
    assert changed["lora"]["name"] == "mine" and changed["lora"]["sha256"] != key["lora"]["sha256"]
    assert changed["lora"]["sha256"] == lora_identity(str(loras["b"]))["sha256"]
    assert max_diff(made_before, generate(lora=str(folder))) > 10  # and the new bytes are what runs


def _not_lora(path: Path) -> Path:
    save_file({"conv.weight": torch.ones(2, 2)}, str(path))
    return path


def _foreign_lora(path: Path) -> Path:  # LoRA names, but for modules this UNet does not have
    save_file({"unet.mid_block.nothing.to_q.lora_A.weight": torch.ones(4, 8),
               "unet.mid_block.nothing.to_q.lora_B.weight": torch.ones(8, 4)}, str(path))
    return path


def _wrong_shapes(path: Path, loras) -> Path:  # the right names, shapes of another model
    from safetensors.torch import load_file

    state = load_file(str(loras["a"] / "pytorch_lora_weights.safetensors"))
    save_file({k: torch.ones(v.shape[0] * 2, v.shape[1] * 2) for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize("kind", ["random bytes", "not a lora", "foreign modules", "wrong shapes", "two files"])
def test_a_bad_adapter_gives_one_line_naming_the_file(kind, loras, tmp_path):
    path = tmp_path / "bad.safetensors"
    if kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(2000))
    elif kind == "not a lora":
        _not_lora(path)
    elif kind == "foreign modules":
        _foreign_lora(path)
    elif kind == "wrong shapes":
        _wrong_shapes(path, loras)
    else:
        _not_lora(path)
        _not_lora(tmp_path / "other.safetensors")
        path = tmp_path
    with pytest.raises(BadArgumentError) as info:
        Pix2PixGenerator(settings(lora=str(path))).load()
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert ("pass a LoRA made for a Stable Diffusion 1.x UNet" in message) or ("pass the folder of one adapter" in message)


def test_an_uncached_hub_adapter_is_refused_offline_with_the_remedy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as info:
        settings(lora="someone/no-such-lora-here").cache_key()
    message = str(info.value)
    assert "not available offline" in message and "hf download someone/no-such-lora-here" in message
    assert "\n" not in message
    with pytest.raises(BadArgumentError, match="nor a valid Hub id"):
        settings(lora="not a hub id!").cache_key()


# --------------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def train(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(2)
    for label in ("cat", "dog"):
        (root / label).mkdir()
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / label / "0.png")
    return root


def augment(train: Path, ws: Path, *extra) -> list[str]:
    return ["augment", "--train-dir", train, "--workspace", ws, "--per-image", "1", "--seed", "4", "--no-progress",
            "--scorer", "none", *extra]


def generations(ws: Path) -> list[tuple[int, str, int, dict, bytes]]:
    """(source, prompt text, seed, settings, Î bytes) of every generation."""
    with sqlite3.connect(ws / "manifest.sqlite") as db:
        rows = db.execute("SELECT source_id, prompt_text, requested_seed, settings, path FROM generations "
                          "ORDER BY id").fetchall()
    return [(s, p, seed, json.loads(js), np.asarray(Image.open(ws / path)).tobytes()) for s, p, seed, js, path in rows]


def test_cli_records_the_lora_and_never_reuses_another_adapters_images(train, loras, tmp_path):
    ws = tmp_path / "ws"
    first = run_cli(*augment(train, ws, *TINY, "--lora", loras["a"]))
    assert first.returncode == 0, first.stderr
    assert "2 generated, 0 reused" in first.stdout
    made_a = generations(ws)
    sha_a = hashlib.sha256((loras["a"] / "pytorch_lora_weights.safetensors").read_bytes()).hexdigest()
    assert [g[3]["lora"] for g in made_a] == [{"name": "lora-a", "sha256": sha_a, "scale": 1.0}] * 2

    # augmentations lost, their Î kept: the same slots again under another adapter must be generated anew
    with sqlite3.connect(ws / "manifest.sqlite") as db:
        db.execute("DELETE FROM augmentations")
    second = run_cli(*augment(train, ws, *TINY, "--lora", loras["b"]))
    assert second.returncode == 0, second.stderr
    assert "2 generated, 0 reused" in second.stdout
    made_b = generations(ws)[2:]
    assert [g[:3] for g in made_b] == [g[:3] for g in made_a]  # the same source, prompt and seed ...
    assert all(b[3]["lora"]["sha256"] != a[3]["lora"]["sha256"] for a, b in zip(made_a, made_b))
    assert all(b[4] != a[4] for a, b in zip(made_a, made_b))  # ... and another Î

    with sqlite3.connect(ws / "manifest.sqlite") as db:  # and with the first adapter again: its Î are reused
        db.execute("DELETE FROM augmentations")
    third = run_cli(*augment(train, ws, *TINY, "--lora", loras["a"]))
    assert third.returncode == 0 and "0 generated, 2 reused" in third.stdout, third.stdout + third.stderr


def test_cli_preset_lcm_needs_a_lora_and_runs_with_one(train, loras, tmp_path):
    model = ["--model", "tiny-random", "--resolution", "64"]  # the preset's own steps (4)
    refused = run_cli(*augment(train, tmp_path / "ws1", *model, "--preset", "lcm"))
    assert refused.returncode != 0
    assert "needs a latent-consistency LoRA" in error_line(refused.stderr)

    ws = tmp_path / "ws2"
    ran = run_cli(*augment(train, ws, *model, "--preset", "lcm", "--lora", loras["a"]))
    assert ran.returncode == 0, ran.stderr
    recorded = generations(ws)[0][3]
    assert (recorded["scheduler"], recorded["steps"], recorded["guidance_scale"]) == ("LCMScheduler", 4, 1.0)
    assert recorded["lora"]["name"] == "lora-a"


@pytest.mark.parametrize("lora", ["missing folder", "random bytes", "wrong shapes"])
def test_cli_bad_lora_is_one_line_and_a_failure(lora, train, loras, tmp_path):
    path = tmp_path / "x.safetensors"
    if lora == "missing folder":
        path = tmp_path / "missing"
    elif lora == "random bytes":
        path.write_bytes(b"\0" * 100)
    else:  # as an adapter for another model (an SDXL LoRA on SD 1.5): diffusers logs a line per tensor
        _wrong_shapes(path, loras)
    result = run_cli(*augment(train, tmp_path / "ws", *TINY, "--lora", path))
    assert result.returncode != 0
    line = error_line(result.stderr)
    assert str(path) in line and ("does not exist" in line or "cannot be loaded" in line)
