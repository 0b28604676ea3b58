"""Random-weight test models, built offline from configs: the same code path as the real model, no download.

* ``tiny-random``: an untrained miniature InstructPix2Pix (tests, offline demos). Its outputs are noise-like.
* ``random-full``: the full SD-1.5-shaped InstructPix2Pix architecture with random weights (compute benchmarks:
  the arithmetic is the real model's).
* :func:`build_tiny_random_lora`: a random LoRA adapter for the ``tiny-random`` UNet, written as a folder
  (tests of ``--lora``); it changes the output and means nothing.
* ``tiny-random-clip``: an untrained miniature CLIP for the label-consistency scorer
  (``curation/label_scorer.py``); its probabilities say nothing about the image.

All three use a miniature byte-level CLIP tokenizer written from two small files (``diffusemix_core/assets/
tiny_tokenizer``).
:data:`TEST_MODELS`, :data:`TEST_SCORERS` and the two notes are the one place that names them and says what they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .devices import torch_dtype
from .hf_logging import quiet_torchvision_fallback

if TYPE_CHECKING:  # pragma: no cover - typing only
    from diffusers import StableDiffusionInstructPix2PixPipeline

__all__ = [
    "TEST_MODELS",
    "TEST_SCORERS",
    "TINY_TOKENIZER_DIR",
    "UNTRAINED_NOTE",
    "UNTRAINED_SCORER_NOTE",
    "build_random_full_pipeline",
    "build_tiny_random_clip",
    "build_tiny_random_lora",
    "build_tiny_random_pipeline",
    "is_test_model",
    "tiny_tokenizer",
    "write_tiny_tokenizer_files",
]

TEST_MODELS = ("tiny-random", "random-full")
UNTRAINED_NOTE = "untrained test model: its generated images are noise by design, not edits"
TEST_SCORERS = ("tiny-random-clip",)
UNTRAINED_SCORER_NOTE = "untrained test scorer: its label scores are random by design and say nothing about the image"
TINY_TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "assets" / "tiny_tokenizer"  # package data
quiet_torchvision_fallback()  # diffusers' pipelines ask transformers for CLIPImageProcessor

# Stable Diffusion 1.x noise schedule (what timbrooks/instruct-pix2pix ships), used by the test models.
_SD_SCHEDULE = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
)


def is_test_model(model: str) -> bool:
    """Whether `model` names one of the random-weight test models or test scorers (its output means nothing)."""
    return model in TEST_MODELS or model in TEST_SCORERS


# --------------------------------------------------------------------------------------------------- tokenizer
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what CLIP's byte-level BPE vocabulary is written in)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))


def write_tiny_tokenizer_files(folder: str | Path = TINY_TOKENIZER_DIR) -> Path:
    """Write the miniature CLIP tokenizer (``vocab.json`` + ``merges.txt``) used by the test models.

    The vocabulary is the 256 byte-level characters, the same with the ``</w>`` word-end suffix, then
    ``<|startoftext|>`` (512) and ``<|endoftext|>`` (513); there are no merges, so text is tokenised per byte.
    Regenerate with ``python -c "from diffusemix_core.engine.test_models import write_tiny_tokenizer_files as w; w()"``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


TINY_VOCAB_SIZE = 514
TINY_BOS_ID, TINY_EOS_ID = 512, 513


def tiny_tokenizer():
    from transformers import CLIPTokenizer

    folder = TINY_TOKENIZER_DIR
    if not (folder / "vocab.json").is_file():  # an install without package data: write a private copy
        import tempfile

        folder = write_tiny_tokenizer_files(tempfile.mkdtemp(prefix="diffusemix-tokenizer-"))
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)



# --------------------------------------------------------------------------------------------------- pipelines
def _assemble_pipeline(unet, vae, text_encoder, tokenizer) -> StableDiffusionInstructPix2PixPipeline:
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
    )

    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(**_SD_SCHEDULE),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _build_random_pipeline(seed: int, unet_kw: dict, vae_kw: dict, text_kw: dict):
    """Build UNet, VAE and text encoder from configs under a forked RNG seeded with ``seed`` (global state untouched)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(in_channels=8, out_channels=4, **unet_kw)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            **vae_kw,
        )
        text_config = CLIPTextConfig(
            vocab_size=TINY_VOCAB_SIZE,
            bos_token_id=TINY_BOS_ID,
            eos_token_id=TINY_EOS_ID,
            pad_token_id=TINY_EOS_ID,
            max_position_embeddings=77,
            **text_kw,
        )
        text_encoder = CLIPTextModel(text_config)
    for module in (unet, vae, text_encoder):
        module.eval()
    return _assemble_pipeline(unet, vae, text_encoder, tiny_tokenizer())


def build_tiny_random_pipeline(seed: int = 0) -> StableDiffusionInstructPix2PixPipeline:
    """An untrained miniature InstructPix2Pix (UNet 8 -> 4 channels, VAE with the real 8x downscale, 2-layer CLIP).

    Built offline from configs; the same ``seed`` gives the same weights every time. Its outputs are noise-like.
    """
    return _build_random_pipeline(
        seed,
        unet_kw=dict(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
        ),
        vae_kw=dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=64),
        text_kw=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4),
    )


def build_random_full_pipeline(seed: int = 0, dtype: Any = None) -> StableDiffusionInstructPix2PixPipeline:
    """The full SD-1.5-shaped InstructPix2Pix architecture with random weights (for compute benchmarks).

    UNet 320/640/1280/1280 with 8 input channels and 768-wide cross-attention, VAE 128/256/512/512, CLIP text
    encoder of ViT-L/14 shape (12 layers x 768). It uses the miniature byte-level tokenizer, so its vocabulary is
    514 tokens instead of 49408 (the embedding lookup costs no FLOPs; everything else is full size).
    ``dtype`` defaults to float32.
    """
    pipe = _build_random_pipeline(
        seed,
        unet_kw=dict(
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            sample_size=64,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
        ),
        vae_kw=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512),
        text_kw=dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            projection_dim=768, hidden_act="quick_gelu",
        ),
    )
    return pipe.to(dtype=torch_dtype(dtype))


LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections, as LCM-LoRA and most others


def build_tiny_random_lora(folder: str | Path, *, rank: int = 4, seed: int = 0, text_encoder: bool = False) -> Path:
    """Write a random LoRA for the ``tiny-random`` UNet into `folder` (``pytorch_lora_weights.safetensors``).

    PEFT's LoRA on the attention projections (to_q, to_k, to_v, to_out.0) with both A and B random (B is zero in
    a freshly initialised adapter, which would change nothing), saved by the pipeline class's
    ``save_lora_weights`` so that ``load_lora_weights`` reads it back. ``text_encoder=True`` adds one on the text
    encoder's attention (q_proj, k_proj, v_proj, out_proj), as some adapters have. Built offline; the same
    ``seed`` writes the same bytes. Returns the folder.
    """
    import torch
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = build_tiny_random_pipeline()
    layers = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(LORA_TARGET_MODULES),
                                         init_lora_weights=False))
        layers["unet_lora_layers"] = get_peft_model_state_dict(pipe.unet)
        if text_encoder:
            config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
            inject_adapter_in_model(config, pipe.text_encoder)
            layers["text_encoder_lora_layers"] = get_peft_model_state_dict(pipe.text_encoder)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionInstructPix2PixPipeline.save_lora_weights(folder, **layers)
    return folder


# --------------------------------------------------------------------------------------------------- scorer
def build_tiny_random_clip(seed: int = 0):
    """An untrained miniature CLIP for the scorer: ``(model, tokenizer, image_processor)``, built offline.

    Towers of 2 layers x 32 wide (vision: 224 px input in 32 px patches, as ViT-B/32), the miniature byte-level
    tokenizer, and the real ViT-B/32 preprocessing (``CLIPImageProcessorPil``: shortest side 224, centre crop,
    CLIP's mean/std), so the scorer's whole code path runs. The same ``seed`` gives the same weights every time.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    config = CLIPConfig(
        text_config=dict(
            vocab_size=TINY_VOCAB_SIZE, bos_token_id=TINY_BOS_ID, eos_token_id=TINY_EOS_ID, pad_token_id=TINY_EOS_ID,
            max_position_embeddings=77, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4,
        ),
        vision_config=dict(
            image_size=224, patch_size=32, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4,
        ),
        projection_dim=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return model.eval(), tiny_tokenizer(), CLIPImageProcessorPil()
