"""LoRA adapters for the UNet: what identifies one, and a pipeline of its own with the adapter folded in.

``GenerationSettings.lora`` names a local ``.safetensors`` file, a local folder holding one, or a Hugging Face id:

* :func:`lora_weights_file` finds the weights file of a local adapter;
* :func:`lora_identity` is what the manifest records for it (name and sha256 of the weights), part of the
  generation cache key, so that an Î made with one adapter is never reused for another, nor for the same name
  with other weights. A Hub id is read from the local Hugging Face cache, downloaded first when downloads are
  allowed and the hub answers, else refused with :class:`ModelUnavailableError` and the remedy (never a hang);
* :func:`apply_lora` gives a pipeline with the adapter loaded into the UNet at a scale (diffusers'
  LoRA loader, PEFT underneath) and fused into the weights, so a step costs what it costs without an adapter.
  The pipeline it is given (the shared, memoised one from ``load_pipeline``, which other generators use) is
  never changed: the new pipeline shares its VAE, text encoder and tokenizer and has a UNet copy of its own
  (the text encoder is copied too if the adapter has weights for it). One such pipeline is kept per (base
  pipeline, adapter sha256, scale), so generators with the same adapter share it.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
import os
import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import BadArgumentError, DiffuseMixError, ModelUnavailableError

__all__ = ["LORA_ADAPTER_NAME", "apply_lora", "lora_identity", "lora_weights_file"]

log = logging.getLogger(__name__)

LORA_ADAPTER_NAME = "diffusemix"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_PREFERRED_NAMES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
_KEPT_PER_PIPELINE = 2  # adapted pipelines kept per base pipeline (each holds a UNet copy)
_REMEDY = ("pass a LoRA made for a Stable Diffusion 1.x UNet in the diffusers or PEFT format (for example "
           "latent-consistency/lcm-lora-sdv1-5)")


# --------------------------------------------------------------------------------------------------- identity
def _weights_in(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    preferred = [p for name in _PREFERRED_NAMES for p in files if p.name == name]
    return preferred[:1] or files


def lora_weights_file(lora: str) -> Path | None:
    """The weights file of a local LoRA (the file itself, or the one weights file in a folder); None for a Hub id.

    Raises BadArgumentError for a local folder with no weights file or with several (name the file then).
    """
    path = Path(lora).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        files = _weights_in(path)
        if len(files) == 1:
            return files[0]
        what = "no .safetensors or .bin file" if not files else f"{len(files)} weight files ({', '.join(p.name for p in files)})"
        raise BadArgumentError(f"LoRA folder {lora} holds {what}: pass the folder of one adapter or the file itself.")
    if lora.startswith((".", "/", "~")) or "\\" in lora or lora.count("/") > 1:
        raise BadArgumentError(f"LoRA {lora} does not exist: pass a local folder or .safetensors file, or a Hub id.")
    return None


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_sha256(file: Path) -> str:
    stat = os.stat(file)
    return _sha256(str(file.resolve()), stat.st_size, stat.st_mtime_ns)


def lora_identity(lora: str) -> dict[str, str | None]:
    """``{"name": ..., "sha256": ...}`` of a LoRA: its name (file or folder name, or the Hub id) and the sha256
    of its weights file.

    A Hub id is looked up in the local Hugging Face cache and downloaded first where downloads are allowed
    (:class:`ModelUnavailableError` with the remedy otherwise), so the hash is always that of the weights used.
    """
    file = lora_weights_file(lora)
    if file is None:
        return {"name": lora, "sha256": _file_sha256(_hub_lora_file(lora))}
    name = file.name if Path(lora).expanduser().is_file() else Path(lora).expanduser().resolve().name or lora
    return {"name": name, "sha256": _file_sha256(file)}


def _hub_hint(repo_id: str) -> str:
    hint = (f"pass --lora PATH to a local folder or .safetensors file, or download it once on a connected machine "
            f"(`hf download {repo_id}`) into the Hugging Face cache")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        hint += "; HF_HUB_OFFLINE is set here, unset it to let the first run download the adapter"
    return hint


def _hub_lora_file(repo_id: str) -> Path:
    """The weights file of Hub LoRA `repo_id` in the local cache, downloaded first when allowed and reachable."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError

    from .model_loading import _hub_reachable, downloads_allowed, hub_cache_dir

    try:
        cached = Path(snapshot_download(repo_id, local_files_only=True))
        files = _weights_in(cached)
    except HFValidationError as exc:
        raise BadArgumentError(f"LoRA {repo_id!r} is neither a local folder or file nor a valid Hub id; "
                               "pass a local folder or .safetensors file, or a Hub id such as "
                               "latent-consistency/lcm-lora-sdv1-5.") from exc
    except OSError:  # not in the cache (LocalEntryNotFoundError)
        files = []
    if not files:
        if not downloads_allowed():
            raise ModelUnavailableError(repo_id, f"LoRA '{repo_id}' is not available offline (it is not in the "
                                        f"Hugging Face cache {hub_cache_dir()} and downloads are off); "
                                        f"{_hub_hint(repo_id)}.")
        if not _hub_reachable(constants.ENDPOINT):
            raise ModelUnavailableError(repo_id, f"LoRA '{repo_id}' is not in the Hugging Face cache "
                                        f"{hub_cache_dir()} and the hub ({constants.ENDPOINT}) cannot be reached "
                                        f"from this machine; {_hub_hint(repo_id)}.")
        try:
            cached = Path(snapshot_download(repo_id, allow_patterns=["*.safetensors"]))
        except Exception as exc:  # noqa: BLE001 - huggingface_hub raises many kinds (HTTP, repo not found, ...)
            raise ModelUnavailableError(repo_id, f"LoRA '{repo_id}' could not be downloaded ({type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                                        f"{_hub_hint(repo_id)}.") from exc
        files = _weights_in(cached)
    if len(files) != 1:
        what = "no .safetensors file" if not files else f"{len(files)} weight files ({', '.join(p.name for p in files)})"
        raise BadArgumentError(f"LoRA {repo_id} holds {what}: download the adapter you mean and pass its file "
                               "with --lora FILE.")
    return files[0]


def _local_weights(lora: str) -> Path:
    file = lora_weights_file(lora)
    return _hub_lora_file(lora) if file is None else file


# --------------------------------------------------------------------------------------------------- applying
_ADAPTED: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[str, float], Any]] = weakref.WeakKeyDictionary()
_ADAPTED_LOCK = threading.Lock()


def apply_lora(pipeline, lora: str, scale: float):
    """A pipeline with the LoRA `lora` fused into its own UNet copy at `scale`; `pipeline` is never changed.

    Memoised per (pipeline, sha256 of the adapter's weights, scale): generators with the same adapter share one.
    Raises BadArgumentError naming the file when it is not a LoRA for this UNet, ModelUnavailableError for a Hub
    id that is neither cached nor downloadable now.
    """
    file = _local_weights(lora)
    key = (_file_sha256(file), float(scale))
    with _ADAPTED_LOCK:
        kept = _ADAPTED.setdefault(pipeline, OrderedDict())
        if key in kept:
            kept.move_to_end(key)
            return kept[key]
        adapted = _adapted_pipeline(pipeline, file, float(scale))
        kept[key] = adapted
        while len(kept) > _KEPT_PER_PIPELINE:
            kept.popitem(last=False)
        log.info("LoRA %s (sha256 %s) fused at scale %g", file, key[0][:12], scale)
        return adapted


def _bad_file(file: Path, why: str) -> BadArgumentError:
    return BadArgumentError(f"LoRA file {file} cannot be loaded: {why}; {_REMEDY}.")


def _adapted_pipeline(pipeline, file: Path, scale: float):
    if importlib.util.find_spec("peft") is None:
        raise DiffuseMixError("LoRA adapters need the peft package, which is not installed here: "
                              "pip install peft==0.21.2 (see requirements.txt).")
    import torch

    try:
        state, alphas, metadata = type(pipeline).lora_state_dict(str(file.parent), weight_name=file.name,
                                                                 return_lora_metadata=True)
    except Exception as exc:  # noqa: BLE001 - safetensors, torch.load and the format converters raise many kinds
        raise _bad_file(file, f"{type(exc).__name__}: {_first_line(exc)}") from exc
    if not state:
        raise _bad_file(file, "it holds no tensors")
    if not all("lora" in k for k in state):
        raise _bad_file(file, "not every tensor name has 'lora' in it, so it is not a LoRA adapter")
    has_text = any(k.startswith("text_encoder.") for k in state)
    components = dict(pipeline.components)
    components["unet"] = copy.deepcopy(pipeline.unet)
    if has_text:  # the adapter changes the text encoder too: then this pipeline needs its own copy of it
        components["text_encoder"] = copy.deepcopy(pipeline.text_encoder)
    components["scheduler"] = type(pipeline.scheduler).from_config(pipeline.scheduler.config)
    adapted = type(pipeline)(**components, requires_safety_checker=False)
    adapted.set_progress_bar_config(disable=True)
    try:
        with _quiet_failed_load():
            _load(adapted, file, state, alphas, metadata, has_text)
    except Exception as exc:  # noqa: BLE001 - PEFT and diffusers raise ValueError, RuntimeError, KeyError, ...
        raise _bad_file(file, f"{type(exc).__name__}: {_first_line(exc)}") from exc
    loaded = [c for c, names in adapted.get_list_adapters().items() if LORA_ADAPTER_NAME in names]
    if "unet" not in loaded:
        raise _bad_file(file, "none of its weights fit this model's UNet")
    with torch.no_grad():
        adapted.fuse_lora(components=loaded, lora_scale=scale, adapter_names=[LORA_ADAPTER_NAME])
    # the fused weights stay; PEFT's extra layers go (no cost per step). Only this pipeline's own copies are touched:
    # the pipeline-wide unload would also walk the shared text encoder.
    adapted.unet.unload_lora()
    if "text_encoder" in loaded:
        _remove_text_encoder_peft(adapted.text_encoder)
    return adapted


def _load(adapted, file: Path, state: dict, alphas, metadata, has_text: bool) -> None:
    if has_text:
        from transformers.utils import logging as hf_logging

        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # transformers draws a bar for the text encoder's few tensors
        try:
            adapted.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=LORA_ADAPTER_NAME)
        finally:
            if shown:
                hf_logging.enable_progress_bar()
    else:  # UNet only (diffusers' own call would warn that the text encoder got nothing)
        adapted.load_lora_into_unet(state, network_alphas=alphas, unet=adapted.unet, metadata=metadata,
                                    adapter_name=LORA_ADAPTER_NAME, _pipeline=adapted)


class _DropFailedLoad(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "was unsuccessful with the following error" not in record.getMessage()


@contextmanager
def _quiet_failed_load():
    """diffusers logs a failed adapter load in full (one line per tensor) before raising it; the error we raise
    from it says it in one line."""
    logger, drop = logging.getLogger("diffusers.loaders.peft"), _DropFailedLoad()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _remove_text_encoder_peft(text_encoder) -> None:
    from diffusers.loaders.lora_base import _remove_text_encoder_monkey_patch

    _remove_text_encoder_monkey_patch(text_encoder)


def _first_line(exc: BaseException) -> str:
    """The first line of an error (with the next one when it ends in a colon), cut to 200 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return "no detail"
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return text[:200].rstrip(". ")
