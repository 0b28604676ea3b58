"""Making the generator use a GPU well: memory layout, attention kernel, compilation, precision fallback, batch size.

* :func:`prepare_pipeline` puts the UNet and VAE in channels_last memory layout on CUDA (convolutions on tensor
  cores prefer it) and checks that attention runs through PyTorch's scaled-dot-product kernel (diffusers'
  ``AttnProcessor2_0``, the default with torch 2);
* :func:`compile_unet` wraps the UNet in ``torch.compile`` (``--compile``); the wrapped module is the generator's
  own, the shared pipeline is not modified;
* :class:`Float32Decoder` decodes again in float32 the latents a float16/bfloat16 VAE turned into NaN or infinity
  (a known overflow of the Stable Diffusion VAE in half precision), so such a batch is not failed;
* :func:`auto_batch_size` finds the largest batch that fits in the GPU's free memory by measuring the peak memory of
  one denoising step at batch 1 and 2, extrapolating, and checking the result; it is measured once per (GPU, model,
  dtype, working size) and cached in ``~/.cache/diffusemix/batch-sizes.json``.

Nothing here changes results on the CPU: the CPU path stays bit-identical to the stock pipeline.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = ["AUTO_CPU_BATCH_SIZE", "MAX_AUTO_BATCH_SIZE", "Float32Decoder", "auto_batch_size", "choose_batch_size",
           "compile_unet", "prepare_pipeline"]

log = logging.getLogger(__name__)

AUTO_CPU_BATCH_SIZE = 4  # on the CPU a larger batch gains nothing (the arithmetic is the work)
MAX_AUTO_BATCH_SIZE = 64
MEMORY_HEADROOM = 0.85  # use at most this share of the free memory
_CACHE_ENV = "DIFFUSEMIX_CACHE_DIR"
_lock = threading.Lock()


def prepare_pipeline(pipe) -> None:
    """channels_last on CUDA; log which attention processor the UNet uses. Idempotent."""
    import torch

    if pipe.unet.device.type == "cuda":
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    kinds = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    if kinds != {"AttnProcessor2_0"}:
        log.info("the UNet's attention runs through %s, not PyTorch's SDPA kernel", ", ".join(sorted(kinds)))


def compile_unet(unet):
    """``torch.compile`` of the UNet (the first batches of each new shape pay the compilation)."""
    import torch

    return torch.compile(unet, fullgraph=False, dynamic=False)


class Float32Decoder:
    """A float32 copy of a half-precision VAE, made on first need, to decode latents the half VAE overflowed on."""

    def __init__(self, vae) -> None:
        self.vae = vae
        self._vae32 = None

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            if self._vae32 is None:
                log.warning("the %s VAE gave NaN or infinity; decoding those latents again in float32", self.vae.dtype)
                self._vae32 = copy.deepcopy(self.vae).to(dtype=torch.float32)
            scaled = latents.to(torch.float32) / self._vae32.config.scaling_factor
            # the class's decode, not an attribute a hook may have put on the half-precision instance (and copied)
            return type(self._vae32).decode(self._vae32, scaled, return_dict=False)[0]


def choose_batch_size(peak_bytes: Callable[[int], int], free_bytes: int, *, limit: int = MAX_AUTO_BATCH_SIZE,
                      fits: Callable[[int], bool] | None = None) -> int:
    """The largest batch whose peak memory stays within MEMORY_HEADROOM of `free_bytes`.

    `peak_bytes(b)` measures the peak memory of one step at batch b (raising MemoryError when it does not fit); the
    cost per image is the difference between b=2 and b=1, so b = (budget - fixed) / per image, capped at `limit`,
    then halved until `fits(b)` (a real run at that size) says yes.
    """
    budget = free_bytes * MEMORY_HEADROOM
    one = peak_bytes(1)
    if one > budget:
        return 1
    try:
        two = peak_bytes(2)
    except MemoryError:
        return 1
    per_image = max(two - one, 1)
    fixed = one - per_image
    batch = int(max(1, min(limit, (budget - fixed) // per_image)))
    while batch > 1 and fits is not None and not fits(batch):
        batch //= 2
    return batch


def _cache_file() -> Path:
    root = Path(os.environ.get(_CACHE_ENV) or Path.home() / ".cache" / "diffusemix")
    return root / "batch-sizes.json"


def auto_batch_size(generator, height: int, width: int) -> int:
    """The largest batch of `generator` that fits on its GPU at working size (height, width); CPU: a fixed 4."""
    import torch

    generator.load()
    device = generator.device
    if device.type != "cuda":
        return AUTO_CPU_BATCH_SIZE
    key = "|".join([torch.cuda.get_device_name(device), generator.settings.model, str(generator.dtype),
                    f"{height}x{width}", f"compile={generator.settings.compile}"])
    path = _cache_file()
    with _lock:
        cache = json.loads(path.read_text()) if path.is_file() else {}
        if key in cache:
            return int(cache[key])
        free, _ = torch.cuda.mem_get_info(device)
        batch = choose_batch_size(lambda b: _peak_of_one_step(generator, b, height, width), free,
                                  fits=lambda b: _fits(generator, b, height, width))
        cache[key] = batch
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cache, indent=1, sort_keys=True))
    log.info("batch size %d fits on %s at %dx%d (cached in %s)", batch, torch.cuda.get_device_name(device), height,
             width, path)
    return batch


def _peak_of_one_step(generator, batch: int, height: int, width: int) -> int:
    """Peak CUDA memory of one classifier-free-guidance UNet step and one VAE decode at `batch` (MemoryError: OOM)."""
    import torch

    device = generator.device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        generator.probe_step(batch, height, width)
        torch.cuda.synchronize(device)
    except torch.cuda.OutOfMemoryError as exc:
        raise MemoryError(str(exc)) from None
    finally:
        torch.cuda.empty_cache()
    return torch.cuda.max_memory_allocated(device)


def _fits(generator, batch: int, height: int, width: int) -> bool:
    try:
        _peak_of_one_step(generator, batch, height, width)
        return True
    except MemoryError:
        return False
