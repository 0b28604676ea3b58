"""The image classifiers the trainer compares arms with: transformers' ResNets and any image-classification model.

:func:`build_model` gives (a classifier for the dataset's classes, its input mean, its input std): ``resnet18`` /
``resnet50`` built from a ``ResNetConfig`` (from scratch, or with ``pretrained`` the ImageNet weights of
microsoft/resnet-18 / -50), ``resnet-tiny`` for tests and smoke runs on a CPU, or a Hugging Face id or local folder
(its config from scratch, or its weights with ``pretrained``; the classifier head is replaced). A hub id that is not
in the cache and cannot be downloaded fails at once with the remedy (``engine.model_loading.resolve_hub_model``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..engine.model_loading import resolve_hub_model
from ..errors import BadArgumentError, ModelUnavailableError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PRETRAINED_IDS", "RESNET_SHAPES", "build_model"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_SHAPES: dict[str, dict] = {
    "resnet18": {"embedding_size": 64, "hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2],
                 "layer_type": "basic"},
    "resnet50": {"embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
                 "layer_type": "bottleneck"},
    # a few thousand parameters: tests and smoke runs on a CPU
    "resnet-tiny": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
}
PRETRAINED_IDS = {"resnet18": "microsoft/resnet-18", "resnet50": "microsoft/resnet-50"}


def build_model(model: str, classes: Sequence[str], *, pretrained: bool = False
                ) -> tuple[torch.nn.Module, tuple[float, ...], tuple[float, ...]]:
    """(an image classifier for `classes`, its input mean, its input std).

    `model` is ``resnet18`` / ``resnet50`` (built from a ``ResNetConfig``: from scratch, or with ``pretrained`` the
    ImageNet weights of microsoft/resnet-18 / -50), ``resnet-tiny``, a Hugging Face id or a local folder (its
    config from scratch, or its weights with ``pretrained``; the classifier head is replaced for `classes`). A hub
    id that is not in the cache and cannot be downloaded raises ModelUnavailableError with the remedy.
    """
    labels = {"num_labels": len(classes), "id2label": dict(enumerate(classes)),
              "label2id": {name: i for i, name in enumerate(classes)}}
    if model in RESNET_SHAPES and not (pretrained and model in PRETRAINED_IDS):
        if pretrained:
            raise BadArgumentError(f"{model} has no pretrained weights; drop --pretrained or use resnet18/resnet50.")
        from transformers import ResNetConfig, ResNetForImageClassification

        return ResNetForImageClassification(ResNetConfig(**RESNET_SHAPES[model], **labels)), IMAGENET_MEAN, IMAGENET_STD
    source = PRETRAINED_IDS.get(model, model)
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelUnavailableError(source, f"Model folder '{local}' has no config.json; pass a folder saved by "
                                                "`model.save_pretrained(...)` or a Hugging Face id.")
        load_kwargs: dict = {"local_files_only": True}
        mean, std = _normalisation(local / "preprocessor_config.json")
    else:
        download = resolve_hub_model(source, probe_file="config.json", what="--model", test_model="resnet18")
        load_kwargs = {"local_files_only": not download}
        mean, std = _normalisation(_cached_hub_file(source, "preprocessor_config.json"))
    from transformers import AutoConfig, AutoModelForImageClassification

    try:
        if pretrained:
            net = AutoModelForImageClassification.from_pretrained(source, ignore_mismatched_sizes=True, **labels,
                                                                  **load_kwargs)
        else:
            config = AutoConfig.from_pretrained(source, **load_kwargs)
            for key, value in labels.items():
                setattr(config, key, value)
            net = AutoModelForImageClassification.from_config(config)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailableError(
            source, f"Model '{source}' could not be loaded as an image classifier ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200]}); pass resnet18, resnet50 or an image-classification model."
        ) from exc
    return net, mean, std


def _cached_hub_file(model: str, name: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, name)
    return Path(found) if isinstance(found, str) else None


def _normalisation(preprocessor_config: Path | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's input mean and std from its preprocessor_config.json, else ImageNet's."""
    if preprocessor_config is not None and preprocessor_config.is_file():
        try:
            config = json.loads(preprocessor_config.read_text(encoding="utf-8"))
            mean, std = tuple(map(float, config["image_mean"])), tuple(map(float, config["image_std"]))
            if len(mean) == len(std) == 3:
                return mean, std
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring unreadable %s; normalising with ImageNet's mean and std", preprocessor_config)
    return IMAGENET_MEAN, IMAGENET_STD
