"""The app's diffusion model: loaded on first use, one generator per distinct setting, and why it failed.

:class:`ModelHolder` keeps one :class:`~diffusemix_core.engine.pix2pix.Pix2PixGenerator` per
:class:`~diffusemix_core.engine.generation.GenerationSettings` (a frozen, hashable dataclass): a tab that asks for
other settings (the Dataset tab's steps and resolution, any setting added later) gets a generator built with
exactly those, never one built with older values. :func:`gpu_task` marks the GPU-bound calls for ZeroGPU on
Hugging Face Spaces (a no-op elsewhere).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import TYPE_CHECKING, Any, Callable

from ..engine.test_models import UNTRAINED_NOTE, is_test_model
from ..errors import DiffuseMixError

if TYPE_CHECKING:
    from ..engine.generation import GenerationSettings
    from ..engine.pix2pix import Pix2PixGenerator

__all__ = ["ModelHolder", "gpu_task"]

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else (optional dependency)
    import spaces

    gpu_task: Callable = spaces.GPU(duration=120)
except ImportError:  # pragma: no cover - depends on the environment

    def gpu_task(fn: Callable) -> Callable:
        return fn


class ModelHolder:
    """Loads generators on first use, keyed by their settings, and remembers why loading failed (status line)."""

    def __init__(self, model: str, *, device: str = "auto", steps: int = 20, resolution: int = 512) -> None:
        self.model, self.device, self.steps, self.resolution = model, device, steps, resolution
        self._generators: dict[tuple[GenerationSettings, str | None], Any] = {}
        self._lock = threading.Lock()
        self.error: str | None = None
        self.loaded = False

    @property
    def is_test_model(self) -> bool:
        return is_test_model(self.model)

    def settings(self, **changes: Any) -> GenerationSettings:
        """The GenerationSettings of this app's model, with a tab's changes (e.g. steps, resolution; None: the
        app's default)."""
        from ..engine.generation import GenerationSettings

        base = GenerationSettings(model=self.model, steps=int(self.steps), resolution=int(self.resolution),
                                  device=self.device)
        return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})

    def generator(self, settings: GenerationSettings | None = None, **changes: Any) -> Pix2PixGenerator:
        """The loaded generator of `settings` (default: :meth:`settings` with `changes`); the pipelines are shared.

        Raises DiffuseMixError (ModelUnavailableError with the remedy) when the model cannot be loaded.
        """
        from ..engine.pix2pix import Pix2PixGenerator

        settings = settings if settings is not None else self.settings(**changes)
        with self._lock:
            # a LoRA is keyed by its content too: a file rewritten at the same path gets a generator of its own
            key = (settings, json.dumps(settings.cache_key(), sort_keys=True)) if settings.lora else (settings, None)
            if key not in self._generators:
                generator = Pix2PixGenerator(settings)
                try:
                    generator.load()
                except DiffuseMixError as exc:
                    self.error = str(exc)
                    raise
                self._generators[key] = generator
                self.loaded, self.error = True, None
            return self._generators[key]

    def token_counter(self) -> Callable[[str], int] | None:
        """Counts the tokens the loaded model's text encoder sees for a text (start and end included); None while
        no model is loaded (then prompts are estimated, see ``PromptLibrary.warnings``)."""
        with self._lock:
            generator = next(iter(self._generators.values()), None)
        if generator is None:
            return None
        tokenizer = generator.pipeline.tokenizer
        return lambda text: len(tokenizer(text).input_ids)

    def status(self) -> str:
        """One Markdown line: loaded or not, why it failed, and whether it is an untrained test model."""
        name = f"`{self.model}`"
        if self.error:
            return f"**Model {name} is unavailable.** {self.error}"
        text = f"Model {name}: {'loaded' if self.loaded else 'loads on first Generate'}."
        if self.is_test_model:
            text += f" ⚠️ **{UNTRAINED_NOTE[0].upper()}{UNTRAINED_NOTE[1:]}**."
        return text
