"""DiffuseMix Studio's engine: label-preserving diffusion augmentation (DiffuseMix, CVPR 2024).

The public names are imported lazily so that ``import diffusemix_core`` does not pull in torch::

    from diffusemix_core import DiffuseMix, GenerationSettings
    dm = DiffuseMix(settings=GenerationSettings(model="tiny-random"))
    record = dm.augment("cat.jpg", seed=7)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DiffuseMix": "engine.diffusemix",
    "AugmentationRecord": "engine.diffusemix",
    "Choice": "engine.diffusemix",
    "GenerationSettings": "engine.generation",
    "Pix2PixGenerator": "engine.pix2pix",
    "DEFAULT_MODEL": "engine.generation",
    "PromptLibrary": "engine.prompts",
    "FractalLibrary": "engine.fractals",
    "MASK_KINDS": "engine.masks",
    "make_mask": "engine.masks",
    "hybrid": "engine.mixing",
    "blend": "engine.mixing",
    "load_image": "engine.images",
    "drift_score": "engine.drift",
    "Workspace": "workspace.folder",
    "run_augment": "bulk.runner",
    "DiffuseMixError": "errors",
    "BadImageError": "errors",
    "ModelUnavailableError": "errors",
    "BadPromptError": "errors",
    "BadArgumentError": "errors",
    "WorkspaceError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'diffusemix_core' has no attribute {name!r}")
