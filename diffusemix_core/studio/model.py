"""The app's diffusion model: loaded on first use, one generator per distinct setting, and why it failed.

:class:`ModelHolder` keeps one :class:`~diffusemix_core.engine.pix2pix.Pix2PixGenerator` per
:class:`~diffusemix_core.engine.generation.GenerationSettings` (a frozen, hashable dataclass): a tab that asks for
other settings (the Dataset tab's steps and resolution, any setting added later) gets a generator built with
exactly those, never one built with older values. Settings start from a preset (``engine/presets.py``; the app's
``--preset``, or the one a tab picks among :data:`APP_PRESETS`). :func:`gpu_task` marks the GPU-bound calls for
ZeroGPU on Hugging Face Spaces (a no-op elsewhere).
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any, Callable

from ..engine.test_models import UNTRAINED_NOTE, is_test_model
from ..errors import BadArgumentError, DiffuseMixError

if TYPE_CHECKING:
    from ..engine.generation import GenerationSettings
    from ..engine.pix2pix import Pix2PixGenerator

__all__ = ["APP_PRESETS", "ModelHolder", "check_app_preset", "gpu_task"]

# the presets the app offers: those that need no adapter (lcm needs a LoRA, a command-line matter: --lora)
APP_PRESETS = ("reference", "fast", "fastest")

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else (optional dependency)
    import spaces

    gpu_task: Callable = spaces.GPU(duration=120)
except ImportError:  # pragma: no cover - depends on the environment

    def gpu_task(fn: Callable) -> Callable:
        return fn


def check_app_preset(name: Any) -> str:
    """`name` if the app offers that preset, else BadArgumentError with the choices."""
    if name not in APP_PRESETS:
        raise BadArgumentError(f"Bad preset {name!r}: choose {', '.join(APP_PRESETS)} (lcm needs a LoRA adapter: "
                               "use the command line's --preset lcm --lora).")
    return name


class ModelHolder:
    """Loads generators on first use, keyed by their settings, and remembers why loading failed (status line)."""

    def __init__(self, model: str, *, device: str = "auto", steps: int | None = None, resolution: int = 512,
                 preset: str = "reference") -> None:
        self.model, self.device, self.steps, self.resolution = model, device, steps, resolution
        self.preset = check_app_preset(preset)
        self._generators: dict[tuple[GenerationSettings, str | None], Any] = {}
        self._lock = threading.Lock()
        self.error: str | None = None
        self.loaded = False

    @property
    def is_test_model(self) -> bool:
        return is_test_model(self.model)

    def settings(self, preset: str | None = None, **changes: Any) -> GenerationSettings:
        """The GenerationSettings of this app's model under `preset` (None: the app's, ``--preset``), with a tab's
        changes on top (e.g. steps, resolution; None: the preset's or the app's default).

        The app's ``--steps`` belongs to the app's preset: a tab that picks another preset gets that preset's
        steps unless it gives its own."""
        from ..engine.generation import GenerationSettings
        from ..engine.presets import apply_preset

        preset = self.preset if preset is None else check_app_preset(preset)
        base = GenerationSettings(model=self.model, resolution=int(self.resolution), device=self.device)
        app_steps = int(self.steps) if self.steps is not None and preset == self.preset else None
        return apply_preset(preset, base, **{"steps": app_steps, **changes})

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
