"""What a generation is asked and what it gives: the settings of the diffusion model, one request, one result.

* :class:`GenerationSettings`: the model, its scheduler, steps and guidance, an optional LoRA adapter, feature
  caching between steps, the working resolution, device and number type, with :meth:`GenerationSettings.cache_key`
  (what determines Î, stored with every generation) and what one augmentation costs in UNet evaluations
  (:meth:`GenerationSettings.unet_evaluations`);
* :func:`working_size`: the model's (height, width) for a source (long side = the resolution, aspect kept);
* :class:`GenerationRequest` (source image, rendered prompt, seed) and :class:`GenerationResult` (Î at the
  source's size, the seed that made it).

The generator that turns requests into results is :class:`~diffusemix_core.engine.pix2pix.Pix2PixGenerator`; where
its models come from is ``model_loading.py`` (hub ids, local folders) and ``test_models.py`` (``tiny-random`` and
``random-full``, built offline). Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import check_int
from ..errors import BadArgumentError
from .devices import check_device, check_dtype, resolve_device, resolve_dtype

__all__ = [
    "DEFAULT_MODEL",
    "GenerationRequest",
    "GenerationResult",
    "GenerationSettings",
    "SCHEDULERS",
    "SCHEDULER_NAME",
    "working_size",
]

DEFAULT_MODEL = "timbrooks/instruct-pix2pix"
# --scheduler names -> diffusers' scheduler classes. euler-a is the authors' and today's default.
SCHEDULERS = {
    "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "ddim": "DDIMScheduler",
    "lcm": "LCMScheduler",
}
SCHEDULER_NAME = SCHEDULERS["euler-a"]
MAX_CACHE_INTERVAL = 50
MIN_RESOLUTION, MAX_RESOLUTION = 64, 4096
MAX_STEPS = 1000


# --------------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class GenerationSettings:
    """Everything that chooses and runs the diffusion model.

    Defaults follow the authors' public implementation where the paper is silent (Euler-ancestral scheduler,
    guidance 4.0, image guidance 1.5, 512 working resolution), except the step count: 20 instead of the
    pipeline's default 100 (``steps=100`` reproduces theirs). ``resolution`` is the long side of the working
    size; the aspect ratio is kept (see :func:`working_size`). ``device="auto"`` picks CUDA when available;
    ``dtype="auto"`` is float16 on CUDA and float32 elsewhere. ``compile`` wraps the UNet in ``torch.compile``.
    Precision and compilation change how Î is computed, not what it is meant to be, so they are not part of
    :meth:`cache_key` (a workspace moved from a float32 CPU to a float16 GPU reuses its Î).

    Cost (``engine/presets.py`` bundles these under plain names):

    * ``scheduler``: one of :data:`SCHEDULERS` (``euler-a``, ``dpm++``, ``unipc``, ``ddim``, ``lcm``);
    * ``lora``: a LoRA adapter (local folder or file, or a Hub id) loaded into the UNet at ``lora_scale``; it is
      part of the cache key by name and content hash (``engine/lora.py``);
    * ``cache_interval``: DeepCache-style feature caching: the UNet's deep blocks run every N-th step, the
      shallow ones every step (1: off, exact);
    * guidance: with ``image_guidance_scale == 1`` the unconditional branch cancels from the InstructPix2Pix
      formula and is not computed (exact: 2 branches instead of 3); with ``guidance_scale <= 1`` one branch runs,
      as in the stock pipeline.
    """

    model: str = DEFAULT_MODEL
    steps: int = 20
    guidance_scale: float = 4.0
    image_guidance_scale: float = 1.5
    resolution: int = 512
    device: str = "auto"
    dtype: str = "auto"
    revision: str | None = None
    compile: bool = False
    scheduler: str = "euler-a"
    lora: str | None = None
    lora_scale: float = 1.0
    cache_interval: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise BadArgumentError(f"Bad model {self.model!r}: pass a diffusers model id, a local folder or 'tiny-random'.")
        check_int("number of steps", self.steps, minimum=1, maximum=MAX_STEPS)
        for name in ("guidance_scale", "image_guidance_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise BadArgumentError(f"Bad {name} {value!r}: pass a finite number >= 0 (default {getattr(GenerationSettings, name)}).")
        if check_int("resolution", self.resolution, minimum=MIN_RESOLUTION, maximum=MAX_RESOLUTION) % 8:
            raise BadArgumentError(
                f"Bad resolution {self.resolution!r}: pass a multiple of 8 from {MIN_RESOLUTION} to {MAX_RESOLUTION} "
                "(default 512)."
            )
        check_device(self.device)
        check_dtype(self.dtype)
        if self.revision is not None and (not isinstance(self.revision, str) or not self.revision.strip()):
            raise BadArgumentError(f"Bad revision {self.revision!r}: pass a branch, tag or commit, or leave it unset.")
        if not isinstance(self.compile, bool):
            raise BadArgumentError(f"Bad compile {self.compile!r}: pass True or False.")
        if self.scheduler not in SCHEDULERS:
            raise BadArgumentError(f"Bad scheduler {self.scheduler!r}: pass one of {', '.join(SCHEDULERS)} (default euler-a).")
        if self.lora is not None and (not isinstance(self.lora, str) or not self.lora.strip()):
            raise BadArgumentError(f"Bad LoRA {self.lora!r}: pass a local folder or .safetensors file, or a Hub id.")
        scale = self.lora_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or not 0 <= scale <= 4:
            raise BadArgumentError(f"Bad lora_scale {scale!r}: pass a number from 0 to 4 (default 1.0).")
        check_int("cache interval", self.cache_interval, minimum=1, maximum=MAX_CACHE_INTERVAL)

    # ---------------------------------------------------------------- cost
    def guidance_branches(self) -> int:
        """UNet batch rows per request and step: 3 (text+image, image, neither), 2 when image guidance is 1 (the
        unconditional branch cancels exactly), 1 without classifier-free guidance (the stock pipeline's rule:
        text guidance <= 1 or image guidance < 1)."""
        if not (self.guidance_scale > 1.0 and self.image_guidance_scale >= 1.0):
            return 1
        return 2 if self.image_guidance_scale == 1.0 else 3

    def unet_evaluations(self) -> int:
        """UNet evaluations per augmentation (batch rows x steps): 60 for the defaults."""
        return self.steps * self.guidance_branches()

    def deep_evaluations(self) -> int:
        """Of :meth:`unet_evaluations`, those that run the UNet's deep blocks (all of them without caching)."""
        return math.ceil(self.steps / self.cache_interval) * self.guidance_branches()

    def cache_key(self) -> dict[str, Any]:
        """Everything that determines Î for a given (image, prompt, seed): JSON-able, stable key order."""
        key: dict[str, Any] = {
            "model": self.model,
            "revision": self.revision,
            "scheduler": SCHEDULERS[self.scheduler],
            "steps": self.steps,
            "guidance_scale": float(self.guidance_scale),
            "image_guidance_scale": float(self.image_guidance_scale),
            "resolution": self.resolution,
        }
        # added only when used, so that the Î of workspaces made before these settings existed stay reusable
        if self.lora is not None:
            from .lora import lora_identity

            key["lora"] = {**lora_identity(self.lora), "scale": float(self.lora_scale)}
        if self.cache_interval > 1:
            key["cache_interval"] = self.cache_interval
        return key

    def resolved_device(self) -> str:
        """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
        return resolve_device(self.device)

    def resolved_dtype(self) -> str:
        """``auto`` -> float16 on CUDA, float32 elsewhere."""
        return resolve_dtype(self.dtype, self.resolved_device())


def working_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """The model's (height, width) for a source: long side = ``resolution``, aspect kept, sides multiples of 8 (>= 8)."""
    scale = resolution / max(height, width)
    return tuple(max(8, math.floor(side * scale / 8 + 0.5) * 8) for side in (height, width))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------- requests
@dataclass
class GenerationRequest:
    """One (source image, rendered prompt, seed) to generate."""

    image: np.ndarray  # uint8 (h, w, 3)
    image_key: str  # identifies the source (e.g. its sha256): latents are encoded once per key
    prompt_text: str  # the rendered prompt (template applied)
    seed: int


@dataclass
class GenerationResult:
    """Î for one request, at the source's size."""

    image: np.ndarray  # uint8 (h, w, 3)
    used_seed: int  # the seed that made the image (the request seed + retries)
    retries: int
