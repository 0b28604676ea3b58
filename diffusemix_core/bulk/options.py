"""The options of a bulk run: one frozen value that travels from the command line and the app to the pipeline.

    AugmentOptions
      settings       GenerationSettings: how Î is made (``engine/generation.py``)
      mix            MixOptions: how A is composed from I, Î and a fractal (λ, feather, the mask kinds drawn)
      per_image, all_prompts, seed     which augmentations each image gets, and what their draws depend on
      batch_size, threads              how the stages are batched and scheduled (never what they make)
      scorer, class_map                the scores stage
      runner, ray_address, workers, gpus_per_worker, cpus_per_worker, stall_timeout
                                       where the stages run: here or on Ray, and how long a silent cluster is waited for

The command line builds it in one function (``cli/augment.options_from_args``: each flag's ``dest`` is the name of
its field), the app from its controls. ``run_augment(workspace, train_dir, options)`` checks it, resolves what it
leaves open (:meth:`AugmentOptions.resolved`: the batch size ``auto``, the generator's own settings) and hands the
same value to the stages and to the Ray runner; :meth:`AugmentOptions.record` is what the run's row remembers.
So a new option is a field here, a flag of the same name, a control in the app and the code that uses it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checks import check_int
from ..engine.diffusemix import Mixer, check_seed
from ..engine.generation import GenerationSettings
from ..engine.masks import MASK_KINDS, check_mask_kind
from ..engine.mixing import check_lam
from ..errors import BadArgumentError

if TYPE_CHECKING:
    from ..engine.fractals import FractalLibrary
    from ..engine.prompts import PromptLibrary

__all__ = ["AUTO_BATCH", "AugmentOptions", "MIX_FIELDS", "MixOptions", "RUNNERS"]

AUTO_BATCH = "auto"  # batch_size: the largest that fits in the GPU's free memory (engine/gpu_tuning.py)
RUNNERS = ("local", "ray")  # where the stages run: this process (runner.py) or a Ray cluster (ray_runner.py)


@dataclass(frozen=True)
class MixOptions:
    """How A is composed: λ (the fractal's weight), the seam's feather in pixels, the mask kinds drawn.

    The field names are :class:`~diffusemix_core.engine.diffusemix.Mixer`'s parameter names: :meth:`mixer` passes
    every field on, so a new mix option is a field here and a parameter of the Mixer.
    """

    lam: float = 0.2
    feather: int = 0
    masks: tuple[str, ...] = MASK_KINDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "lam", check_lam(self.lam))
        object.__setattr__(self, "feather", check_int("feather", self.feather, minimum=0))
        if isinstance(self.masks, str):
            raise BadArgumentError(f"masks must be a list of mask kinds, got the text {self.masks!r}.")
        masks = tuple(check_mask_kind(kind) for kind in self.masks)
        if not masks:
            raise BadArgumentError(f"at least one mask kind is needed; choose from {', '.join(MASK_KINDS)}.")
        object.__setattr__(self, "masks", masks)

    def mixer(self, prompts: PromptLibrary | None, fractals: FractalLibrary | None, *, seed: int = 0) -> Mixer:
        """The Mixer that composes with these options."""
        return Mixer(prompts=prompts, fractals=fractals, seed=seed, **_values(self))

    def record(self) -> dict[str, Any]:
        """JSON values (the masks as a list)."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in _values(self).items()}


MIX_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(MixOptions))


@dataclass(frozen=True)
class AugmentOptions:
    """Every option of a bulk run (see the module docstring); checked when made, so a bad value fails at once."""

    settings: GenerationSettings = field(default_factory=GenerationSettings)
    mix: MixOptions = field(default_factory=MixOptions)
    per_image: int = 1  # augmentations per image (slot:0 … slot:m-1)
    all_prompts: bool = False  # instead: one augmentation per enabled prompt (prompt:<p>)
    seed: int = 0  # every draw depends on (seed, file content, slot) only
    batch_size: int | str = 4  # images per batch, also the model's batch size; "auto": measured on the GPU
    threads: int | None = None  # CPU threads of the load and compose stages; 1: every stage in turn, in one thread
    scorer: Any = None  # "auto", "none"/None, a CLIP model id or folder, or a score_stage.Score
    class_map: str | Path | None = None  # a class-name mapping file for the scorer (remembered in the workspace)
    runner: str = "local"  # "local" or "ray"
    ray_address: str | None = None  # with runner="ray": None, "auto" or "HOST:PORT"
    workers: int | None = None  # with runner="ray": generate actors (None: as many as the GPUs allow, else 1)
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    stall_timeout: float | None = None  # with runner="ray": seconds with none back before the run stops (0: never)

    def __post_init__(self) -> None:
        if not isinstance(self.settings, GenerationSettings):
            raise BadArgumentError(f"settings must be a GenerationSettings, got {type(self.settings).__name__}.")
        if not isinstance(self.mix, MixOptions):
            raise BadArgumentError(f"mix must be a MixOptions, got {type(self.mix).__name__}.")
        object.__setattr__(self, "per_image", check_int("per_image", self.per_image, minimum=1))
        object.__setattr__(self, "seed", check_seed(self.seed))
        if not isinstance(self.all_prompts, bool):
            raise BadArgumentError(f"all_prompts must be True or False, got {self.all_prompts!r}.")
        if self.runner not in RUNNERS:
            raise BadArgumentError(f"the runner (--engine) must be 'local' or 'ray', got {self.runner!r}.")
        if self.batch_size == AUTO_BATCH:
            if self.runner == "ray":
                raise BadArgumentError(
                    "--batch-size auto measures this machine's GPU; with --engine ray give a number that fits the "
                    "workers' GPUs (e.g. what a local run with auto chose).")
        else:
            object.__setattr__(self, "batch_size", check_int("batch_size", self.batch_size, minimum=1))
        if self.threads is not None:
            object.__setattr__(self, "threads", check_int("threads", self.threads, minimum=1))

    def resolved(self, settings: GenerationSettings, batch_size: int) -> AugmentOptions:
        """These options as the run uses them: the generator's `settings` and a whole batch size."""
        return dataclasses.replace(self, settings=settings, batch_size=batch_size)

    def record(self) -> dict[str, Any]:
        """What the run's row remembers (``runs.args``, JSON): what determines the augmentations and how the run
        was batched. The keys are those of earlier versions (``lam`` and ``feather`` at the top level), so a run
        compares with the runs before it (``runner._settings_changed``)."""
        return {"per_image": self.per_image, "all_prompts": self.all_prompts, "seed": self.seed,
                **self.mix.record(), "batch_size": self.batch_size, "settings": self.settings.cache_key()}


def _values(options: Any) -> dict[str, Any]:
    """The fields of a dataclass by name (shallow: nested values as they are)."""
    return {f.name: getattr(options, f.name) for f in fields(options)}
