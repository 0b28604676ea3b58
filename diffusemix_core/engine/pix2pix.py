"""The InstructPix2Pix denoising loop: a batched, cached generator from (image, rendered prompt, seed) to Î.

Generation is InstructPix2Pix (diffusers' ``StableDiffusionInstructPix2PixPipeline``) with, by default, the
Euler-ancestral scheduler, as in the authors' public code. :class:`Pix2PixGenerator` runs the pipeline's own
components (tokenizer, text encoder, VAE, UNet, scheduler) in a loop of its own because the stock ``__call__``
cannot reuse work across calls; with the default settings the loop keeps the stock behaviour step for step:

* each distinct rendered prompt (and the empty negative prompt) goes through the text encoder once;
* each distinct source image (``image_key``) is VAE-encoded once, ``latent_dist.mode()`` unscaled, as the
  pipeline's ``prepare_image_latents`` does;
* requests of the same working size are denoised together, and classifier-free guidance runs its branches
  (text+image, image only, neither) in ONE UNet call per step, and only those its formula needs: with image
  guidance 1 the unconditional branch cancels exactly, so 2 branches run instead of 3;
* every request draws its initial noise and its step noise from its own CPU ``torch.Generator`` seeded with the
  request's seed, so a result does not depend on the rest of its batch, and a request equals a stock pipeline
  call made with ``generator=torch.Generator().manual_seed(seed)`` (tests check both).

The settings choose the scheduler (``schedulers.py``), the step count, a LoRA (``lora.py``) and feature caching
between steps (``feature_cache.py``). What it is asked and gives (settings, requests, results) is
``generation.py``; where the models come from is ``model_loading.py``; how it uses a GPU well is
``gpu_tuning.py``. torch and diffusers are imported lazily so that ``import diffusemix_core`` stays fast.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from cachetools import LRUCache
from PIL import Image

from ..checks import check_int
from ..errors import BadArgumentError, DiffuseMixError
from .feature_cache import FeatureCache
from .generation import GenerationRequest, GenerationResult, GenerationSettings, working_size
from .gpu_tuning import Float32Decoder, auto_batch_size, compile_unet, prepare_pipeline
from .model_loading import load_pipeline
from .schedulers import make_scheduler
from .schedulers import step as scheduler_step
from .test_models import is_test_model

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = ["COUNTER_NAMES", "Pix2PixGenerator"]

log = logging.getLogger(__name__)

# unet: UNet calls (one per step and batch); unet_rows: UNet evaluations (batch rows x calls, the cost measure);
# unet_shallow_rows: those of them that ran only the shallow blocks (feature caching)
COUNTER_NAMES = ("text_encoder", "vae_encode", "unet", "unet_rows", "unet_shallow_rows", "vae_decode")
MAX_DEGENERATE_RETRIES = 3
BLACK_MAX_VALUE = 2  # an output whose brightest channel value is <= this counts as all black
_PROMPT_CACHE_SIZE = 1024  # prompt embeddings kept (each (1, 77, d))
_LATENT_CACHE_SIZE = 512  # image latents kept (each (1, 4, h/8, w/8))


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL Lanczos resize of a uint8 (h, w, 3) array; a no-op when the size already matches."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), resample=Image.LANCZOS))


def _check_request(index: int, request: GenerationRequest) -> None:
    img = request.image
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
        got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise BadArgumentError(
            f"Request {index} has an image of {got}; pass a uint8 (h, w, 3) RGB array (diffusemix_core.load_image makes one)."
        )
    check_int(f"seed of request {index}", request.seed, minimum=0)


@dataclass
class _Work:
    index: int  # position in the caller's request list
    request: GenerationRequest
    seed: int
    size: tuple[int, int]  # working (height, width)


class Pix2PixGenerator:
    """Batched, cached InstructPix2Pix generation: (image, rendered prompt, seed) -> Î at the source's size.

    ``pipeline`` may be given (it is used as is, on its own device and dtype; its scheduler is replaced by
    Euler-ancestral); otherwise :meth:`load` loads ``settings.model`` with :func:`load_pipeline`.
    ``counters`` counts component invocations: text_encoder, vae_encode, unet, vae_decode.
    """

    def __init__(self, settings: GenerationSettings = GenerationSettings(), *, pipeline=None) -> None:
        self.settings = settings
        self.model_id = settings.model
        self.is_test_model = is_test_model(settings.model)
        self.counters: dict[str, int] = {name: 0 for name in COUNTER_NAMES}
        self._pipeline = pipeline
        self._unet = None  # the pipeline's UNet, or its torch.compile wrapper
        self._decoder32 = None  # float32 re-decode of latents a half-precision VAE overflowed on
        self._ready = False
        self._prompt_cache: LRUCache[str, Any] = LRUCache(maxsize=_PROMPT_CACHE_SIZE)
        self._latent_cache: LRUCache[tuple, Any] = LRUCache(maxsize=_LATENT_CACHE_SIZE)
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- loading
    @property
    def pipeline(self):
        """The loaded pipeline (loads it on first use)."""
        self.load()
        return self._pipeline

    def load(self) -> None:
        """Load the pipeline (ModelUnavailableError with the remedy when the model is not available offline)."""
        with self._lock:
            if self._ready:
                return
            if self._pipeline is None:
                self._pipeline = load_pipeline(
                    self.settings.model,
                    device=self.settings.resolved_device(),
                    dtype=self.settings.resolved_dtype(),
                    revision=self.settings.revision,
                )
            else:
                from diffusers import EulerAncestralDiscreteScheduler

                if not isinstance(self._pipeline.scheduler, EulerAncestralDiscreteScheduler):
                    self._pipeline.scheduler = EulerAncestralDiscreteScheduler.from_config(self._pipeline.scheduler.config)
                self._pipeline.set_progress_bar_config(disable=True)
            import torch

            if self.settings.lora is not None:  # a pipeline of its own: the shared one stays without the adapter
                from .lora import apply_lora

                self._pipeline = apply_lora(self._pipeline, self.settings.lora, self.settings.lora_scale)
            pipe = self._pipeline
            prepare_pipeline(pipe)
            self._unet = compile_unet(pipe.unet) if self.settings.compile else pipe.unet
            self._decoder32 = Float32Decoder(pipe.vae) if pipe.vae.dtype != torch.float32 else None
            self._ready = True

    @property
    def device(self) -> torch.device:
        return self.pipeline.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipeline.unet.dtype

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The model's (height, width) for a source of this size under the current settings."""
        return working_size(height, width, self.settings.resolution)

    def auto_batch_size(self, height: int | None = None, width: int | None = None) -> int:
        """The largest batch that fits on this GPU at a working size (default: square at the resolution)."""
        side = self.settings.resolution
        return auto_batch_size(self, height or side, width or side)

    def probe_step(self, batch: int, height: int, width: int) -> None:
        """One UNet step (with the settings' guidance branches) and one VAE decode of `batch` random latents (memory probes)."""
        import torch

        self.load()
        pipe, factor = self._pipeline, self._pipeline.vae_scale_factor
        with self._lock, torch.inference_mode():
            shape = (batch, pipe.vae.config.latent_channels, height // factor, width // factor)
            latents = torch.randn(shape, device=self.device, dtype=self.dtype)
            rows = self.settings.guidance_branches() * batch
            embeds = self._prompt_embeds("").expand(rows, -1, -1)
            model_input = torch.cat([latents.repeat(rows // batch, 1, 1, 1)] * 2, dim=1)
            self._unet(model_input, 999, encoder_hidden_states=embeds, return_dict=False)
            pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)

    # ---------------------------------------------------------------- caches
    def _prompt_embeds(self, text: str) -> torch.Tensor:
        """CLIP hidden states (1, 77, d) of one prompt, encoded once per text (as the stock ``_encode_prompt``)."""
        embeds = self._prompt_cache.get(text)
        if embeds is not None:
            return embeds
        pipe = self._pipeline
        tok = pipe.tokenizer
        inputs = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        if len(tok(text).input_ids) > tok.model_max_length:
            log.warning("prompt longer than %d tokens was truncated: %r", tok.model_max_length, text[:80])
        mask = None
        if getattr(pipe.text_encoder.config, "use_attention_mask", False):
            mask = inputs.attention_mask.to(self.device)
        embeds = pipe.text_encoder(inputs.input_ids.to(self.device), attention_mask=mask)[0]
        self.counters["text_encoder"] += 1
        embeds = embeds.to(dtype=pipe.text_encoder.dtype, device=self.device)
        self._prompt_cache[text] = embeds
        return embeds

    def _image_latents(self, work: _Work) -> torch.Tensor:
        """Unscaled VAE latents (1, 4, h/8, w/8) of a source at its working size, encoded once per image_key."""
        key = (work.request.image_key, work.size)
        latents = self._latent_cache.get(key)
        if latents is not None:
            return latents
        pipe = self._pipeline
        # the pipeline's own preprocessing ([-1, 1], NCHW; its memory layout steers the conv kernels' last bits)
        tensor = pipe.image_processor.preprocess(Image.fromarray(_resize(work.request.image, *work.size)))
        tensor = tensor.to(device=self.device, dtype=pipe.text_encoder.dtype)
        latents = pipe.vae.encode(tensor).latent_dist.mode()
        self.counters["vae_encode"] += 1
        self._latent_cache[key] = latents
        return latents

    def clear_caches(self) -> None:
        """Forget cached prompt embeddings and image latents."""
        with self._lock:
            self._prompt_cache.clear()
            self._latent_cache.clear()

    # ---------------------------------------------------------------- generation
    def generate(
        self,
        requests: list[GenerationRequest],
        *,
        batch_size: int = 4,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[GenerationResult]:
        """Generate Î for every request; results in request order, each at its source's size.

        ``progress(done, total)`` is called after every batch. A degenerate output (NaN, or all black) is
        regenerated with seed+1, up to 3 times; after that :class:`DiffuseMixError` names the request and reason.
        """
        import torch

        check_int("batch size", batch_size, minimum=1)
        for i, request in enumerate(requests):
            _check_request(i, request)
        total = len(requests)
        results: list[GenerationResult | None] = [None] * total
        if not total:
            return []
        self.load()  # outside inference mode: the weights must stay ordinary tensors
        with self._lock, torch.inference_mode():
            pending = [
                _Work(i, r, int(r.seed), self.working_size(*r.image.shape[:2])) for i, r in enumerate(requests)
            ]
            done = 0
            reasons: dict[int, str] = {}
            for attempt in range(MAX_DEGENERATE_RETRIES + 1):
                retry: list[_Work] = []
                for size_group in self._group_by_size(pending):
                    for batch in _chunks(size_group, batch_size):
                        for work, (image, reason) in zip(batch, self._generate_batch(batch)):
                            if reason is None:
                                results[work.index] = GenerationResult(image=image, used_seed=work.seed, retries=attempt)
                                done += 1
                            else:
                                reasons[work.index] = reason
                                log.warning(
                                    "degenerate output (%s) for image %s seed %d; retrying with seed %d",
                                    reason, work.request.image_key, work.seed, work.seed + 1,
                                )
                                retry.append(_Work(work.index, work.request, work.seed + 1, work.size))
                        if progress is not None:
                            progress(done, total)
                pending = retry
                if not pending:
                    break
            if pending:
                work = pending[0]
                first = int(work.request.seed)
                raise DiffuseMixError(
                    f"Generation for image '{work.request.image_key}' with prompt {work.request.prompt_text!r} gave a "
                    f"degenerate output ({reasons[work.index]}) for seeds {first} to {first + MAX_DEGENERATE_RETRIES}; "
                    "run in float32 (--dtype float32), try another seed, or check the model."
                )
        return results  # type: ignore[return-value]

    @staticmethod
    def _group_by_size(works: list[_Work]) -> list[list[_Work]]:
        groups: dict[tuple[int, int], list[_Work]] = {}
        for work in works:
            groups.setdefault(work.size, []).append(work)
        return list(groups.values())

    def _generate_batch(self, batch: Sequence[_Work]) -> list[tuple[np.ndarray | None, str | None]]:
        """Denoise one batch of same-size requests; returns (Î at source size, None) or (None, degenerate reason)."""
        latents = self._denoise(batch)
        pipe = self._pipeline
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        self.counters["vae_decode"] += 1
        if self._decoder32 is not None:  # a half-precision VAE that overflowed: decode those again in float32
            bad = [i for i, (sample, lat) in enumerate(zip(decoded, latents))
                   if bool(lat.isfinite().all()) and not bool(sample.isfinite().all())]
            if bad:
                decoded = decoded.float()
                decoded[bad] = self._decoder32.decode(latents[bad])
        out = []
        for work, sample, lat in zip(batch, decoded, latents):
            if not (bool(sample.isfinite().all()) and bool(lat.isfinite().all())):
                out.append((None, "NaN or infinite values"))
                continue
            # the stock VaeImageProcessor.postprocess: denormalize, clamp, float32, *255, round
            array = ((sample.float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
            if int(array.max()) <= BLACK_MAX_VALUE:
                out.append((None, "all black"))
                continue
            h, w = work.request.image.shape[:2]
            out.append((_resize(array, h, w), None))
        return out

    def _denoise(self, batch: Sequence[_Work]) -> torch.Tensor:
        """The InstructPix2Pix loop of the stock pipeline, on a batch, with one CPU generator per request.

        Guidance runs only the branches its formula needs (``GenerationSettings.guidance_branches``): with image
        guidance 1 the unconditional term cancels from ε∅ + s_T(ε_T − ε_I) + s_I(ε_I − ε∅), leaving
        ε_I + s_T(ε_T − ε_I), so that branch is not computed (exact up to float rounding).
        """
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        pipe, s = self._pipeline, self.settings
        device, dtype = self.device, pipe.text_encoder.dtype
        n = len(batch)
        branches = s.guidance_branches()
        text = torch.cat([self._prompt_embeds(w.request.prompt_text) for w in batch])
        image_latents = torch.cat([self._image_latents(w) for w in batch])
        if branches > 1:
            negative = self._prompt_embeds("").expand(n, -1, -1)
            embeds = torch.cat([text, negative, negative][:branches])
            image_latents = torch.cat([image_latents, image_latents, torch.zeros_like(image_latents)][:branches])
        else:
            embeds = text

        scheduler = make_scheduler(s.scheduler, pipe.scheduler.config, steps=s.steps, device=device)  # per batch
        generators = [torch.Generator("cpu").manual_seed(w.seed) for w in batch]
        height, width = batch[0].size
        factor = pipe.vae_scale_factor
        shape = (n, pipe.vae.config.latent_channels, height // factor, width // factor)
        latents = randn_tensor(shape, generator=generators, device=device, dtype=dtype) * scheduler.init_noise_sigma
        # feature caching calls the UNet's blocks itself: the eager UNet, never a torch.compile wrapper
        cache = FeatureCache(pipe.unet, s.cache_interval) if s.cache_interval > 1 else None

        for index, t in enumerate(scheduler.timesteps):
            model_input = torch.cat([latents] * branches)
            model_input = scheduler.scale_model_input(model_input, t)
            model_input = torch.cat([model_input, image_latents], dim=1)
            rows = model_input.shape[0]
            if cache is None:
                noise = self._unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
            else:
                if not cache.is_full(index):
                    self.counters["unet_shallow_rows"] += rows
                noise = cache(model_input, t, embeds, index)
            self.counters["unet"] += 1
            self.counters["unet_rows"] += rows
            if branches == 3:
                noise_text, noise_image, noise_uncond = noise.chunk(3)
                noise = (
                    noise_uncond
                    + s.guidance_scale * (noise_text - noise_image)
                    + s.image_guidance_scale * (noise_image - noise_uncond)
                )
            elif branches == 2:
                noise_text, noise_image = noise.chunk(2)
                noise = noise_image + s.guidance_scale * (noise_text - noise_image)
            latents = scheduler_step(scheduler, noise, t, latents, generators)
        return latents
