"""Label consistency: does an augmentation still show its class? Zero-shot CLIP over the dataset's class names.

DiffuseMix keeps the label of I for the augmented image, which is only right while the image still shows the
class. Peers check this automatically with CLIP (ALIA scores each image against its class name; Diff-Mix drops
the 10% that CLIP likes least). For each image :meth:`LabelScorer.score` gives a :class:`LabelConsistency`:

* ``prob``: the probability of the image's true class, a softmax over ALL the dataset's class names of CLIP's
  scaled cosine similarities (image embedding vs class-name embedding), and
* ``rank``: where the true class stands (1 = CLIP's top choice; 1 + the number of classes with a higher prob),
* ``top_name`` / ``top_prob``: CLIP's top choice, for a reviewer ("looks like: tabby cat, 0.71").

The class names come from ``class_names.py``. Prompt templates: each class name is written into a few templates and
the normalised text embeddings are averaged (CLIP's prompt ensembling, Radford et al. 2021, §3.1.4: averaging
templates beats the best single one). The ensemble :data:`DEFAULT_TEMPLATES` is chosen for DiffuseMix: its prompts
turn photos into paintings, sketches, mosaics and prints, so "a photo of a dog." alone would also penalise the style
change, which is wanted; the question asked here is whether the dog is still there. Text embeddings cost once per
(scorer, class list) and are cached; images are scored in batches of ``batch_size``.

The scorer model is a Hugging Face id or a local folder of any CLIP-style model (one whose transformers class has
``get_image_features`` and ``get_text_features``), loaded like the generator: from the cache, or a fast
one-sentence :class:`ModelUnavailableError` offline (``engine.model_loading.resolve_hub_model``).
``tiny-random-clip`` is an untrained miniature built offline (``engine.test_models.build_tiny_random_clip``) for
tests; whatever it scores is marked untrained (``is_test_model``, ``note``). Preprocessing is transformers' PIL
image processor, asked for by name (no torchvision). torch and transformers are imported lazily, so importing this
module is cheap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cachetools import LRUCache

from ..engine.devices import check_device, check_dtype, resolve_device, resolve_dtype, torch_dtype
from ..engine.model_loading import download_hint, looks_like_path, resolve_hub_model
from ..engine.test_models import TEST_SCORERS, UNTRAINED_SCORER_NOTE, build_tiny_random_clip
from ..errors import BadArgumentError, ModelUnavailableError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_SCORER", "DEFAULT_TEMPLATES", "LabelConsistency", "LabelScorer"]

log = logging.getLogger(__name__)

DEFAULT_SCORER = "openai/clip-vit-base-patch32"
DEFAULT_TEMPLATES = (
    "a photo of a {name}.",
    "a photo of the {name}.",
    "a painting of a {name}.",
    "a sketch of a {name}.",
    "art of the {name}.",
)
DEFAULT_BATCH_SIZE = 32
MAX_LOGIT_SCALE = 100.0  # CLIP clamps its learned temperature here
_TEXT_CACHE_SIZE = 8  # class lists whose text embeddings are kept


# --------------------------------------------------------------------------------------------------- loading
@dataclass
class _Parts:
    model: Any
    tokenizer: Any
    image_processor: Any


_LOADED: dict[tuple, _Parts] = {}
_LOADED_LOCK = threading.Lock()


def _locate(model: str, revision: str | None) -> tuple[str | None, dict[str, Any]]:
    """Where ``model`` loads from: ``(None, {})`` for the test scorer, else ``(source, from_pretrained kwargs)``.

    Raises :class:`ModelUnavailableError` with the remedy, fast and before torch or transformers are imported.
    """
    if model in TEST_SCORERS:
        return None, {}
    if looks_like_path(model):
        folder = Path(model).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelUnavailableError(
                str(folder), f"Scorer folder '{folder}' is not a transformers model folder (no config.json); pass the "
                "folder written by `save_pretrained(...)` of a CLIP model, its tokenizer and its image processor, or "
                f"a downloaded snapshot of {DEFAULT_SCORER}.")
        return str(folder), {"local_files_only": True}
    download = resolve_hub_model(model, probe_file="config.json", revision=revision, test_model=TEST_SCORERS[0],
                                 what="--scorer")
    return model, {"local_files_only": not download, "revision": revision}


def _load_parts(model: str, device: str, dtype: str, revision: str | None) -> _Parts:
    """Load (once per process and resolved (model, device, dtype, revision)) a CLIP-style model, its tokenizer and
    its PIL image processor."""
    source, kwargs = _locate(model, revision)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    key = (model, device, dtype, revision)
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_uncached(model, source, kwargs, device, dtype, revision)
        return _LOADED[key]


def _load_uncached(model: str, source: str | None, kwargs: dict[str, Any], device: str, dtype: str,
                   revision: str | None) -> _Parts:
    number_type = torch_dtype(dtype)
    if source is None:
        clip, tokenizer, image_processor = build_tiny_random_clip()
    else:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        try:
            clip = AutoModel.from_pretrained(source, dtype=number_type, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            # the PIL backend by name: the same pixels whether or not torchvision is installed (transformers would
            # pick it when present), and no fallback warning (CLIPImageProcessor itself warns without torchvision)
            image_processor = AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__
            if Path(source).is_dir():
                raise ModelUnavailableError(
                    model, f"Scorer folder '{model}' could not be loaded ({detail}); check that it holds a complete "
                    "CLIP model with its tokenizer and image processor (`save_pretrained` of all three), or use "
                    f"--scorer {TEST_SCORERS[0]} (an untrained test model that works offline).") from exc
            raise ModelUnavailableError(
                model, f"Scorer '{model}' could not be loaded ({detail}); "
                f"{download_hint(model, test_model=TEST_SCORERS[0], what='--scorer', revision=revision)}.") from exc
    if not (hasattr(clip, "get_image_features") and hasattr(clip, "get_text_features")):
        raise BadArgumentError(
            f"Scorer '{model}' is not a CLIP-style model (a {type(clip).__name__} has no get_image_features); pass a "
            f"CLIP model such as {DEFAULT_SCORER}.")
    clip = clip.to(device=device, dtype=number_type).eval()
    log.info("loaded scorer %s on %s (%s)", model, device, dtype)
    return _Parts(clip, tokenizer, image_processor)


# --------------------------------------------------------------------------------------------------- scorer
@dataclass(frozen=True)
class LabelConsistency:
    """How well one image still shows its class."""

    prob: float  # probability of the true class (softmax over all class names)
    rank: int  # 1 = the true class is CLIP's top choice
    top_name: str  # CLIP's top choice
    top_prob: float  # its probability


def _features(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor (older transformers) or an output whose pooler_output is the embedding."""
    return output if hasattr(output, "norm") else output.pooler_output


def _unique(names: Sequence[str]) -> list[str]:
    if isinstance(names, str) or not all(isinstance(n, str) and n.strip() for n in names):
        raise BadArgumentError(f"Bad class names {str(names)[:80]}; pass a list of non-empty strings.")
    return list(dict.fromkeys(names))


class LabelScorer:
    """Zero-shot CLIP label consistency: ``score(images, true_names, class_names) -> [LabelConsistency]``.

    ``model`` is a hub id, a local folder or ``tiny-random-clip``; ``device="auto"`` picks CUDA when available;
    ``dtype="auto"`` is float16 on CUDA, float32 elsewhere. ``templates`` hold ``{name}``. The model loads on first
    use (or :meth:`load`), once per process. Thread-safe; keep one scorer for a run, its text embeddings are cached.
    """

    def __init__(self, model: str = DEFAULT_SCORER, *, device: str = "auto", dtype: str = "auto",
                 templates: Sequence[str] = DEFAULT_TEMPLATES, batch_size: int = DEFAULT_BATCH_SIZE,
                 revision: str | None = None) -> None:
        if not isinstance(model, str) or not model.strip():
            raise BadArgumentError(f"Bad scorer {model!r}: pass a CLIP model id, a local folder or 'tiny-random-clip'.")
        check_device(device)
        check_dtype(dtype)
        templates = tuple(templates) if not isinstance(templates, str) else (templates,)
        if not templates or not all(isinstance(t, str) and "{name}" in t for t in templates):
            raise BadArgumentError(f"Bad templates {templates!r}: pass strings that contain {{name}}, e.g. "
                                   "'a photo of a {name}.'.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise BadArgumentError(
                f"Bad batch size {batch_size!r}: pass an integer >= 1 (default {DEFAULT_BATCH_SIZE}).")
        self.model_id = model
        self.revision = revision
        self.templates = templates
        self.batch_size = batch_size
        self.is_test_model = model in TEST_SCORERS
        self.note = UNTRAINED_SCORER_NOTE if self.is_test_model else ""
        self._device, self._dtype = device, dtype
        self._parts: _Parts | None = None
        self._text_cache: LRUCache[tuple[str, ...], Any] = LRUCache(maxsize=_TEXT_CACHE_SIZE)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"LabelScorer({self.model_id!r}, device={self._device!r}, dtype={self._dtype!r})"

    # ---------------------------------------------------------------- loading
    @property
    def device(self) -> str:
        """The resolved device (``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``)."""
        return resolve_device(self._device)

    @property
    def dtype(self) -> str:
        """The resolved dtype name (``auto`` -> float16 on CUDA, float32 elsewhere)."""
        return resolve_dtype(self._dtype, self.device)

    def load(self) -> LabelScorer:
        """Load the model (ModelUnavailableError with the remedy when it is not available offline); returns self."""
        with self._lock:
            if self._parts is None:
                self._parts = _load_parts(self.model_id, self._device, self._dtype, self.revision)
        return self

    # ---------------------------------------------------------------- embeddings
    def text_embeddings(self, class_names: Sequence[str]) -> torch.Tensor:
        """Normalised (k, d) float32 embeddings of the class names, templates averaged; cached per class list."""
        import torch

        names = tuple(_unique(class_names))
        with self._lock:
            embeds = self._text_cache.get(names)
            if embeds is not None:
                return embeds
            parts = self.load()._parts
            texts = [template.format(name=name) for template in self.templates for name in names]
            chunks = []
            with torch.inference_mode():
                for start in range(0, len(texts), 256):
                    inputs = parts.tokenizer(texts[start:start + 256], padding=True, truncation=True,
                                             max_length=getattr(parts.tokenizer, "model_max_length", 77),
                                             return_tensors="pt").to(self.device)
                    chunks.append(_features(parts.model.get_text_features(**inputs)).float())
            embeds = torch.nn.functional.normalize(torch.cat(chunks), dim=-1)
            embeds = embeds.reshape(len(self.templates), len(names), -1).mean(dim=0)
            embeds = torch.nn.functional.normalize(embeds, dim=-1)
            self._text_cache[names] = embeds
            return embeds

    def image_embeddings(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Normalised (n, d) float32 embeddings of uint8 (h, w, 3) images, computed in batches of ``batch_size``."""
        import torch

        for i, image in enumerate(images):
            if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
                    or image.shape[2] != 3 or 0 in image.shape):
                got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
                raise BadArgumentError(f"Image {i} is {got}; pass uint8 (h, w, 3) RGB arrays "
                                       "(diffusemix_core.load_image makes one).")
        with self._lock:
            parts = self.load()._parts
            model_dtype = getattr(torch, self.dtype)
            chunks = []
            with torch.inference_mode():
                for start in range(0, len(images), self.batch_size):
                    batch = list(images[start:start + self.batch_size])
                    # channels_last said explicitly: a 3-pixel-high image would otherwise be read as channels-first
                    pixels = parts.image_processor(images=batch, return_tensors="pt",
                                                   input_data_format="channels_last")["pixel_values"]
                    pixels = pixels.to(device=self.device, dtype=model_dtype)
                    chunks.append(_features(parts.model.get_image_features(pixel_values=pixels)).float())
            if not chunks:
                return torch.zeros((0, getattr(parts.model.config, "projection_dim", 0)))
            return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    def _logit_scale(self) -> float:
        scale = getattr(self._parts.model, "logit_scale", None)
        return MAX_LOGIT_SCALE if scale is None else min(float(scale.detach().float().exp()), MAX_LOGIT_SCALE)

    # ---------------------------------------------------------------- scores
    def probabilities(self, images: Sequence[np.ndarray], class_names: Sequence[str]) -> np.ndarray:
        """(n, k) float64 softmax over the distinct ``class_names`` (first-seen order) for each image."""
        text = self.text_embeddings(class_names)
        if not len(images):
            return np.zeros((0, text.shape[0]))
        return self._probabilities(self.image_embeddings(images), text)

    def _probabilities(self, image, text) -> np.ndarray:
        logits = (self._logit_scale() * image @ text.T).cpu().double().numpy()
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def score(self, images: Sequence[np.ndarray], true_names: Sequence[str],
              class_names: Sequence[str]) -> list[LabelConsistency]:
        """For each image, the probability and rank of its true class name among ``class_names`` (all of them).

        ``images``: uint8 (h, w, 3) arrays; ``true_names[i]``: the class name of image i, one of ``class_names``
        (names as given by :func:`class_names`; a name listed twice counts once).
        """
        return self.score_embedded(images, true_names, class_names)[0]

    def score_embedded(self, images: Sequence[np.ndarray], true_names: Sequence[str],
                       class_names: Sequence[str]) -> tuple[list[LabelConsistency], np.ndarray]:
        """:meth:`score` and the images' normalised (n, d) float32 embeddings it computed on the way (stored by
        ``curation.embeddings`` for the probe and the map)."""
        if isinstance(true_names, str) or len(true_names) != len(images):
            got = "a string of" if isinstance(true_names, str) else len(true_names)
            raise BadArgumentError(
                f"Got {len(images)} images and {got} true names; pass one true class name per image.")
        names = _unique(class_names)
        column = {name: j for j, name in enumerate(names)}
        missing = sorted({name for name in true_names if name not in column})
        if missing:
            raise BadArgumentError(f"True class name {missing[0]!r} is not among the {len(names)} class names; pass "
                                   "every class name of the dataset (curation.class_names.class_names gives them).")
        text = self.text_embeddings(names)
        if not len(images):
            return [], np.zeros((0, int(text.shape[1])), dtype=np.float32)
        embeds = self.image_embeddings(images)
        probs = self._probabilities(embeds, text)
        scores = []
        for row, name in zip(probs, true_names):
            p = row[column[name]]
            top = int(row.argmax())
            scores.append(LabelConsistency(prob=float(p), rank=1 + int((row > p).sum()), top_name=names[top],
                                     top_prob=float(row[top])))
        return scores, embeds.cpu().float().numpy()
