"""Loading an InstructPix2Pix pipeline: a test model, a local diffusers folder, or a Hugging Face id.

A hub id is taken from the local cache when it is there; otherwise it is downloaded, unless downloads are off
(``HF_HUB_OFFLINE=1``, or ``DIFFUSEMIX_ALLOW_DOWNLOAD=0``) or the hub cannot be reached within a few seconds, which
give a :class:`ModelUnavailableError` with the remedy instead of a long hang. :func:`resolve_hub_model` is the
shared check, also used by the scorer's CLIP model. Pipelines are memoised per (model, device, dtype, revision).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import BadArgumentError, ModelUnavailableError
from .devices import torch_dtype as _torch_dtype
from .hf_logging import quiet_torchvision_fallback
from .test_models import build_random_full_pipeline, build_tiny_random_pipeline

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = ["ALLOW_DOWNLOAD_ENV", "download_hint", "downloads_allowed", "hub_cache_dir", "load_pipeline",
           "looks_like_path", "resolve_hub_model"]

log = logging.getLogger(__name__)
quiet_torchvision_fallback()  # diffusers' pipelines ask transformers for CLIPImageProcessor

ALLOW_DOWNLOAD_ENV = "DIFFUSEMIX_ALLOW_DOWNLOAD"

_PIPELINES: dict[tuple, Any] = {}
_PIPELINES_LOCK = threading.Lock()


def load_pipeline(model: str, *, device: Any, dtype: Any, revision: str | None = None):
    """Load (once per ``(model, device, dtype, revision)``) an InstructPix2Pix pipeline with the Euler-a scheduler.

    Raises :class:`ModelUnavailableError` with the remedy when the model is neither a test model, a local
    diffusers folder, nor already in the Hugging Face cache (no network is tried unless
    ``DIFFUSEMIX_ALLOW_DOWNLOAD=1``).
    """

    torch_dtype = _torch_dtype(dtype)
    device = str(device)
    key = (model, device, str(torch_dtype), revision)
    with _PIPELINES_LOCK:
        if key not in _PIPELINES:
            _PIPELINES[key] = _load_uncached(model, device, torch_dtype, revision)
        return _PIPELINES[key]


def looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1 or Path(model).expanduser().exists()


def _hub_offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def download_hint(model: str, *, test_model: str = "tiny-random", what: str = "--model",
                  revision: str | None = None) -> str:
    """The remedy for a model that is not here: a local folder, a download elsewhere, or the offline test model.

    The download command is huggingface_hub's ``hf download`` (2.x installs no ``huggingface-cli``).
    """
    command = f"hf download {model}" + (f" --revision {revision}" if revision else "")
    hint = (
        f"pass {what} PATH to a local folder, download it once on a connected machine "
        f"(`{command}`), or use {what} {test_model} (an untrained test model that works offline)"
    )
    if _hub_offline_env():
        hint += "; HF_HUB_OFFLINE is set here, unset it to let the first run download the model"
    return hint


def _load_uncached(model: str, device: str, torch_dtype: torch.dtype, revision: str | None):
    # diffusers is imported only once a pipeline is in hand, so a missing model fails before that slow import.
    if model == "tiny-random":
        pipe = build_tiny_random_pipeline()
    elif model == "random-full":
        pipe = build_random_full_pipeline(dtype=torch_dtype)
    elif looks_like_path(model):
        pipe = _load_folder(Path(model).expanduser(), torch_dtype)
    else:
        pipe = _load_hub(model, torch_dtype, revision)
    if pipe.unet.config.in_channels != 8:
        raise BadArgumentError(
            f"Model '{model}' is not an InstructPix2Pix model (its UNet takes {pipe.unet.config.in_channels} input "
            "channels, not 8); pass an InstructPix2Pix model such as timbrooks/instruct-pix2pix."
        )
    from diffusers import EulerAncestralDiscreteScheduler

    if not isinstance(pipe.scheduler, EulerAncestralDiscreteScheduler):
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    if pipe.unet.dtype != torch_dtype:
        pipe.to(dtype=torch_dtype)
    log.info("loaded model %s on %s (%s)", model, device, torch_dtype)
    return pipe


def _from_pretrained(source: str, torch_dtype, **kwargs):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    return StableDiffusionInstructPix2PixPipeline.from_pretrained(
        source, dtype=torch_dtype, safety_checker=None, requires_safety_checker=False, **kwargs
    )


def _load_folder(path: Path, torch_dtype):
    if not (path / "model_index.json").is_file():
        raise ModelUnavailableError(
            str(path),
            f"Model folder '{path}' is not a diffusers pipeline folder (no model_index.json); pass the folder saved "
            "by `pipeline.save_pretrained(...)` or a downloaded snapshot of timbrooks/instruct-pix2pix.",
        )
    try:
        return _from_pretrained(str(path), torch_dtype, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            str(path), f"Model folder '{path}' cannot be loaded ({exc}); check that it is a complete diffusers folder."
        ) from exc


def downloads_allowed() -> bool:
    """Downloads are on unless HF_HUB_OFFLINE is set, or DIFFUSEMIX_ALLOW_DOWNLOAD says otherwise."""
    from huggingface_hub import constants

    setting = os.environ.get(ALLOW_DOWNLOAD_ENV)
    if setting is not None:
        return setting.strip() == "1"
    return not (_hub_offline_env() or constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> str:
    """The Hugging Face cache folder models are looked up in (``HF_HUB_CACHE``), as an absolute path."""
    from huggingface_hub import constants

    return str(Path(constants.HF_HUB_CACHE).expanduser().absolute())


def _hub_reachable(endpoint: str, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within `timeout_s` (so a closed network fails fast)."""
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def resolve_hub_model(model: str, *, probe_file: str, revision: str | None = None, test_model: str = "tiny-random",
                      what: str = "--model") -> bool:
    """Check that hub id `model` can be loaded now; returns whether it must be downloaded (else: cache only).

    `probe_file` is a file every snapshot of such a model has (``model_index.json`` for a pipeline,
    ``config.json`` for a transformers model). Raises :class:`ModelUnavailableError` with the remedy when the id is
    malformed, or when the model is not cached and downloads are off or the hub cannot be reached.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    hint = download_hint(model, test_model=test_model, what=what, revision=revision)
    try:
        cached = try_to_load_from_cache(model, probe_file, revision=revision)
    except HFValidationError as exc:
        raise ModelUnavailableError(
            model, f"Model '{model}' is neither a local folder nor a valid Hugging Face id; {hint}."
        ) from exc
    if isinstance(cached, str):
        return False
    if not downloads_allowed():
        raise ModelUnavailableError(
            model, f"Model '{model}' is not available offline (it is not in the Hugging Face cache "
            f"{hub_cache_dir()} and downloads are off); {hint}."
        )
    if not _hub_reachable(constants.ENDPOINT):
        raise ModelUnavailableError(
            model, f"Model '{model}' is not in the Hugging Face cache {hub_cache_dir()} and the hub "
            f"({constants.ENDPOINT}) cannot be reached from this machine; {hint}."
        )
    return True


def _load_hub(model: str, torch_dtype, revision: str | None):
    download = resolve_hub_model(model, probe_file="model_index.json", revision=revision)
    try:
        return _from_pretrained(model, torch_dtype, revision=revision, local_files_only=not download)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            model, f"Model '{model}' could not be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            f"{download_hint(model, revision=revision)}."
        ) from exc
