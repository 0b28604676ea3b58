"""What a bulk run will cost, said before it starts: counts from the plan, UNet evaluations from the settings, time
from a short calibration on the chosen device.

    Estimate
      sources, per_source, to_make        image files, augmentations each should have, those still missing (on a
                                          resume, the missing slots only: ``plan.count_missing``)
      unet_evaluations, deep_evaluations  per augmentation (``GenerationSettings.unet_evaluations``; with feature
                                          caching, how many of them run the UNet's deep blocks)
      seconds_per_augmentation, device    one model batch timed on the run's generator (model loading excluded)
      faster                              on a GPU: the preset one step faster, its time scaled by the evaluations

:func:`estimate_run` computes it; nothing is written and nothing is generated but the calibration batch: the first
missing-or-not slots of the first readable files, with the very choices the run draws for them (``plan.slot_rng``),
at the run's batch size on a GPU (one augmentation on the CPU, where batching saves little). On a GPU a first batch
is run untimed (kernel selection, allocator, compilation), then the same batch is timed with the generator's
prompt and image caches cleared, as a batch of new sources would run. During the run the figure is refined from
the measured throughput (``runner.RunProgress``: done, rate, time left). With the Ray runner the workers' devices
are not here: the estimate gives the counts and says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checks import format_duration
from ..engine.generation import GenerationRequest, GenerationSettings
from ..engine.images import image_key, load_image
from ..engine.presets import PRESETS, apply_preset, faster_preset
from ..errors import BadArgumentError, BadImageError, DiffuseMixError, ModelUnavailableError
from .cpu_share import CpuShare
from .options import AUTO_BATCH, AugmentOptions
from .plan import Jobs, check_manifest_fits, count_missing, read_regular_file, slot_rng
from .runner import scan_train_dir

if TYPE_CHECKING:
    from ..engine.diffusemix import Mixer
    from ..engine.fractals import FractalLibrary
    from ..engine.pix2pix import Pix2PixGenerator
    from ..engine.prompts import PromptLibrary
    from ..workspace.folder import Workspace

__all__ = ["Estimate", "Faster", "estimate_run", "format_duration"]

MAX_UNREADABLE = 16  # files skipped while looking for calibration images before giving up on timing


@dataclass(frozen=True)
class Faster:
    """The preset one step faster than the run's: its UNet evaluations and, when the run's were timed, its time
    per augmentation scaled by the ratio of evaluations."""

    preset: str
    unet_evaluations: int
    seconds_per_augmentation: float | None


@dataclass(frozen=True)
class Estimate:
    """What a bulk run will cost (see the module docstring); :meth:`format` says it in a few lines."""

    sources: int
    per_source: int
    to_make: int
    scheduler: str
    steps: int
    branches: int
    unet_evaluations: int
    deep_evaluations: int
    device: str
    seconds_per_augmentation: float | None = None
    calibrated_on: int = 0  # augmentations timed
    load_seconds: float | None = None  # loading the model for the calibration (not counted in the time)
    preset: str | None = None
    faster: Faster | None = None
    note: str = ""  # why there is no time, when there is none

    @property
    def already(self) -> int:
        """Augmentations the workspace holds already (of those the run asks for)."""
        return max(0, self.sources * self.per_source - self.to_make)

    @property
    def total_unet_evaluations(self) -> int:
        return self.to_make * self.unet_evaluations

    @property
    def total_seconds(self) -> float | None:
        return None if self.seconds_per_augmentation is None else self.to_make * self.seconds_per_augmentation

    def to_dict(self) -> dict[str, Any]:
        """JSON values, with the totals."""
        return {**dataclasses.asdict(self), "already": self.already, "total_seconds": self.total_seconds,
                "total_unet_evaluations": self.total_unet_evaluations}

    def format(self) -> str:
        """A few readable lines (the command line prints them; the app shows them)."""
        evaluations = f"{self.unet_evaluations} ({self.scheduler}, {self.steps} steps x {self.branches} guidance " \
                      f"branch{'es' if self.branches != 1 else ''}"
        if self.deep_evaluations != self.unet_evaluations:
            evaluations += f"; {self.deep_evaluations} of them run the deep blocks (feature caching)"
        lines = [
            f"estimate: {self.sources} source images, {self.to_make} augmentations to make ({self.per_source} per "
            f"image, {self.already} already in the workspace)",
            f"  UNet evaluations per augmentation: {evaluations}), {self.total_unet_evaluations:,} for the run",
        ]
        if self.seconds_per_augmentation is not None:
            lines.append(
                f"  time: about {format_duration(self.total_seconds)} for the run on {self.device} "
                f"({format_duration(self.seconds_per_augmentation)} per augmentation, {self.calibrated_on} timed "
                "after loading the model; refined from the measured rate as the run goes)")
        elif self.to_make:
            lines.append(f"  time: {self.note or 'not measured'}")
        if self.faster is not None:
            faster = self.faster
            text = f"  preset {faster.preset} (one step faster): {faster.unet_evaluations} UNet evaluations per " \
                   "augmentation"
            if faster.seconds_per_augmentation is not None:
                text += f", about {format_duration(self.to_make * faster.seconds_per_augmentation)} for the run " \
                        "(scaled from the timing above by the evaluations)"
            lines.append(text)
        return "\n".join(lines)

    def line(self) -> str:
        """One line: counts, evaluations and time (the app's progress text)."""
        total = self.total_seconds
        time_words = f", about {format_duration(total)} on {self.device}" if total is not None else ""
        return (f"{self.to_make} augmentations to make from {self.sources} images, {self.unet_evaluations} UNet "
                f"evaluations each{time_words}")





# ------------------------------------------------------------------------------------------------ the estimate
def estimate_run(train_dir: str | Path, options: AugmentOptions, *, workspace: Workspace | None = None,
                 prompts: PromptLibrary | None = None, fractals: FractalLibrary | None = None,
                 generator: Pix2PixGenerator | None = None, preset: str | None = None, calibrate: bool = True,
                 seconds_per_augmentation: float | None = None) -> Estimate:
    """The cost of ``run_augment(workspace, train_dir, options)`` before it runs.

    `workspace` None: a workspace that does not exist yet (every slot is missing). `generator` (default: one built
    from ``options.settings``) is the one the run will use; its settings replace ``options.settings``, as in the
    run. `preset`: the preset the settings were made from (default: the one they match, if any), for the faster
    one. ``seconds_per_augmentation`` given (a calibration made before) or ``calibrate=False``: no model call.
    Raises BadArgumentError as the run would, before anything loads: no images, a count that cannot fit.
    """
    files = scan_train_dir(train_dir)
    if not files:
        raise BadArgumentError(f"no image files found in '{train_dir}'; the layout is DIR/<class>/<image> with "
                               "extensions such as .png/.jpg.")
    if prompts is None:
        from ..engine.prompts import PromptLibrary

        prompts = workspace.manifest.get_prompt_library() if workspace is not None else PromptLibrary.default()
    prompts.validate()
    jobs = Jobs(options.per_image, tuple(prompts.enabled()) if options.all_prompts else None)
    if workspace is not None:
        to_make = count_missing(workspace.manifest, files, jobs)
        check_manifest_fits(workspace.manifest, to_make, workspace.path)
    else:
        to_make = len(files) * len(jobs)
    settings = generator.settings if generator is not None else options.settings
    device, loaded, timed, note = "the Ray cluster's workers", None, 0, ""
    if options.runner == "ray":
        note = "measured on the cluster's workers as the run goes (no calibration here)"
    elif to_make and seconds_per_augmentation is None and calibrate:
        from ..engine.pix2pix import Pix2PixGenerator

        generator = generator if generator is not None else Pix2PixGenerator(settings)
        mixer = options.mix.mixer(prompts, fractals, seed=options.seed)
        seconds_per_augmentation, timed, loaded, device, note = _calibrate(generator, Path(train_dir), files, jobs,
                                                                           mixer, options)
    else:
        device = settings.resolved_device()  # (a generator's device would load its model)
    faster = None
    if device.startswith(("cuda", "mps")):
        faster = _faster(settings, preset, seconds_per_augmentation)
    return Estimate(sources=len(files), per_source=len(jobs), to_make=to_make, scheduler=settings.scheduler,
                    steps=settings.steps, branches=settings.guidance_branches(),
                    unet_evaluations=settings.unet_evaluations(), deep_evaluations=settings.deep_evaluations(),
                    device=device, seconds_per_augmentation=seconds_per_augmentation, calibrated_on=timed,
                    load_seconds=loaded, preset=preset if preset is not None else _preset_of(settings),
                    faster=faster, note=note)


def _calibrate(generator: Pix2PixGenerator, train_dir: Path, files, jobs: Jobs, mixer: Mixer,
               options: AugmentOptions) -> tuple[float | None, int, float, str, str]:
    """(seconds per augmentation, augmentations timed, seconds to load the model, device, why there is no time)
    of one model batch. A model that cannot load fails here as it would in the run; a batch that fails otherwise
    (degenerate outputs: the run leaves such slots for the next run) leaves the time unmeasured."""
    started = time.perf_counter()
    generator.load()
    loaded = time.perf_counter() - started
    device = str(generator.device)
    on_cpu = device.startswith("cpu")
    batch_size = options.batch_size
    if batch_size == AUTO_BATCH:
        batch_size = generator.auto_batch_size()
    requests = calibration_requests(train_dir, files, jobs, mixer, options.seed, 1 if on_cpu else batch_size)
    if not requests:
        return None, 0, loaded, device, "not measured: none of the first images could be read"
    # a CPU run shares the cores with other runs (runner._cpu_share): time it with the share it will get
    with (CpuShare(reserve=1) if on_cpu else contextlib.nullcontext()) as share:
        try:
            if share is not None:
                share.apply()
            else:  # the first GPU batch selects kernels and fills the allocator: not what the run's batches cost
                generator.generate(requests, batch_size=len(requests))
            generator.clear_caches()  # prompts and latents encoded again, as for a batch of new sources
            started = time.perf_counter()
            generator.generate(requests, batch_size=len(requests))
            seconds = time.perf_counter() - started
        except (ModelUnavailableError, BadArgumentError):
            raise
        except DiffuseMixError as exc:
            return None, 0, loaded, device, f"not measured: the calibration batch failed ({exc})"
    return seconds / len(requests), len(requests), loaded, device, ""


def calibration_requests(train_dir: Path, files, jobs: Jobs, mixer: Mixer, seed: int,
                         count: int) -> list[GenerationRequest]:
    """Up to `count` requests for the first slots of the first readable files, with the choices the run draws for
    them (unreadable files are passed over, at most MAX_UNREADABLE of them)."""
    requests: list[GenerationRequest] = []
    unreadable = 0
    for rel, _ in files:
        if len(requests) >= count or unreadable >= MAX_UNREADABLE:
            break
        try:
            data = read_regular_file(train_dir / rel)
            image = load_image(data)
        except (OSError, BadImageError):
            unreadable += 1
            continue
        sha256, pixels = hashlib.sha256(data).hexdigest(), image_key(image)
        for job_key, _, fixed_prompt in itertools.islice(jobs, count - len(requests)):
            choice = mixer.sample(slot_rng(seed, sha256, job_key), 1, prompt=fixed_prompt)[0]
            requests.append(GenerationRequest(image=image, image_key=pixels,
                                              prompt_text=mixer.prompts.render(choice.prompt), seed=choice.seed))
    return requests


# ------------------------------------------------------------------------------------------------ presets
_PRESET_FIELDS = sorted({name for preset in PRESETS.values() for name in preset.changes})


def _without_preset(settings: GenerationSettings) -> GenerationSettings:
    """`settings` with every field a preset sets back at its default (model, resolution, caching... kept)."""
    defaults = GenerationSettings()
    return dataclasses.replace(settings, **{name: getattr(defaults, name) for name in _PRESET_FIELDS})


def _preset_of(settings: GenerationSettings) -> str | None:
    """The preset `settings` are exactly (None: changed beside a preset, or an LCM preset)."""
    base = _without_preset(settings)
    for name, preset in PRESETS.items():
        if not preset.needs_lora and apply_preset(name, base) == settings:
            return name
    return None


def _faster(settings: GenerationSettings, preset: str | None, seconds: float | None) -> Faster | None:
    """The preset one step faster than `preset` (or the one the settings match), if it needs fewer evaluations."""
    name = preset if preset is not None else _preset_of(settings)
    faster = faster_preset(name) if name is not None else None
    if faster is None:
        return None
    evaluations = apply_preset(faster, _without_preset(settings)).unet_evaluations()
    if evaluations >= settings.unet_evaluations():
        return None
    scaled = None if seconds is None else seconds * evaluations / settings.unet_evaluations()
    return Faster(preset=faster, unet_evaluations=evaluations, seconds_per_augmentation=scaled)
