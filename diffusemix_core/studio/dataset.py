"""The Dataset tab's work without Gradio: which folder a bulk run may read, the uploaded datasets, the run itself.

A run reads either an uploaded zip (by its handle ``upload:<id>``) or a folder typed by the user. A typed folder is
server data, so :func:`typed_dataset_folder` is a sandbox: typed folders only where the app allows them (on
loopback, or inside ``--data-root``), the path resolved before the check (``..`` and links cannot climb out), and
no link inside that leads outside the data root. Each browser session can cancel its own run.

A run's generation settings start from a preset (the app's ``--preset``, or the one the tab picks; the tab's steps
win over the preset's). Before a run, and at its start, the tab shows its cost (``bulk/estimate.py``): sources,
augmentations to make, UNet evaluations per augmentation and the time of one calibration batch, measured once per
settings and batch size in this app.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, Callable

from ..bulk.estimate import Estimate, estimate_run
from ..bulk.options import AugmentOptions, MixOptions
from ..bulk.runner import RunProgress, run_augment
from ..bulk.stages import RunSummary
from ..bulk.summary import settings_changed_note, summary_line
from ..checks import format_size
from ..engine.fractals import FractalLibrary
from ..engine.presets import PRESETS
from ..errors import BadArgumentError
from ..workspace.files import links_outside
from ..workspace.folder import Workspace
from ..workspace.uploads import UploadedDataset, Uploads
from .model import ModelHolder, gpu_task

__all__ = ["DatasetRuns", "describe_upload", "estimate_markdown", "run_message", "typed_dataset_folder"]

UPLOAD_PREFIX = "upload:"


def typed_dataset_folder(text: str, *, allowed: bool, data_root: Path | None) -> Path:
    """The folder a user typed, if a run may read it: BadArgumentError (one sentence with the remedy) when typed
    folders are off, when it resolves outside `data_root` (links and ``..`` resolved first), when it is not a
    folder, or when it holds links to anything outside `data_root`."""
    if not allowed:
        raise BadArgumentError("Typed server folders are off: this app is reachable from other machines; upload a "
                               "zip of class folders (or start it with --data-root DIR to allow folders inside DIR).")
    path = Path(text).expanduser().resolve()  # links resolved before the check
    root = data_root.resolve() if data_root is not None else None
    if root is not None and path != root and root not in path.parents:
        raise BadArgumentError(f"Folder '{text}' is outside the data root this app was started with; give a folder "
                               "inside it.")
    if not path.is_dir():
        raise BadArgumentError(f"Folder '{text}' does not exist (or is not a folder); give a folder holding one "
                               "sub-folder per class.")
    escaping = links_outside(path, root) if root is not None else []
    if escaping:
        raise BadArgumentError(f"Folder '{text}' holds {len(escaping)} link(s) to files or folders outside the data "
                               f"root (such as '{escaping[0].relative_to(path)}'); remove them or copy what they "
                               "point to into the data root.")
    return path


def describe_upload(dataset: UploadedDataset) -> str:
    """'Extracted 120 files from 'pets.zip': 2 classes: cats (60), dogs (60). …' (or 'Already uploaded …')."""
    head = "Already uploaded (nothing extracted again)" if dataset.reused else f"Extracted {dataset.files} files"
    classes = ", ".join(f"{name} ({n})" for name, n in dataset.classes[:30])
    more = f", … {len(dataset.classes) - 30} more" if len(dataset.classes) > 30 else ""
    return f"{head} from '{dataset.name}': {len(dataset.classes)} classes: {classes}{more}. Press Run to augment it."


def run_message(summary: RunSummary) -> str:
    """The Dataset tab's line about a finished (or cancelled) run."""
    head = "⏹ Cancelled: run again to resume." if summary.cancelled else "✅ Done."
    note = settings_changed_note(summary)
    return f"{head}{' ⚠️ ' + note if note else ''} {summary_line(summary)}"


def estimate_markdown(estimate: Estimate) -> str:
    """The estimate's lines as the tab shows them."""
    head, *rest = estimate.format().splitlines()
    return "**Estimate** " + head.removeprefix("estimate: ") + "".join(f"  \n{line.strip()}" for line in rest)


@gpu_task
def estimate_job(train_dir: Path, options: AugmentOptions, **kwargs) -> Estimate:
    """The estimate's calibration batch (decorated with spaces.GPU on ZeroGPU)."""
    return estimate_run(train_dir, options, **kwargs)


@gpu_task
def run_dataset_job(workspace: Workspace, train_dir: Path, options: AugmentOptions, **kwargs) -> RunSummary:
    """The GPU-bound bulk run (decorated with spaces.GPU on ZeroGPU)."""
    return run_augment(workspace, train_dir, options, **kwargs)


class DatasetRuns:
    """Uploaded datasets and bulk runs into the workspace (a run resumes what is there), one cancel per session."""

    def __init__(self, workspace: Workspace, uploads: Uploads, model: ModelHolder, fractals: FractalLibrary, *,
                 typed_folders: bool, data_root: Path | None = None, ray_address: str | None = None) -> None:
        self.workspace, self.uploads, self.model, self.fractals = workspace, uploads, model, fractals
        self.typed_folders, self.data_root, self.ray_address = typed_folders, data_root, ray_address
        self._cancel: dict[str, threading.Event] = {}
        self._calibrated: dict[tuple, float] = {}  # (settings, batch size) -> seconds per augmentation measured
        self._calibrated_lock = threading.Lock()
        self._cancel_lock = threading.Lock()

    # -- uploads --------------------------------------------------------------------------------------------
    def extract(self, archive: str | Path | None) -> tuple[str, str]:
        """Keep an uploaded zip of class folders in the workspace (once per content): (its handle, its classes)."""
        if not archive:
            raise BadArgumentError("No zip given: choose a .zip of class folders first.")
        dataset = self.uploads.add(archive, name=Path(archive).name)
        return dataset.handle, describe_upload(dataset)

    def uploads_table(self) -> tuple[list[list], str]:
        """The uploaded datasets, newest first (no server paths), and a line with the space they take."""
        rows = [[d.id, d.name, len(d.classes), d.files, format_size(d.bytes), d.created_at]
                for d in self.uploads.list()]
        return rows, self.uploads.usage_line()

    def delete_upload(self, dataset_id: str) -> str:
        """Delete one uploaded dataset's files (augmentations already made from it stay in the workspace)."""
        dataset = self.uploads.delete((dataset_id or "").strip())
        return f"Deleted upload '{dataset.name}' ({dataset.files} files)."

    # -- runs -----------------------------------------------------------------------------------------------
    def folder(self, train_dir: str | None) -> Path:
        """The folder a run may read: an upload ('upload:<id>'), or a typed folder where typed folders are allowed."""
        text = (train_dir or "").strip()
        if not text:
            raise BadArgumentError("No dataset given: upload a zip of class folders first" + (
                ", or type a folder on this machine." if self.typed_folders else "."))
        if text.startswith(UPLOAD_PREFIX):
            return self.uploads.path(text[len(UPLOAD_PREFIX):])
        return typed_dataset_folder(text, allowed=self.typed_folders, data_root=self.data_root)

    def cancel_event(self, session: str | None, *, reset: bool = False) -> threading.Event:
        key = session or "default"
        with self._cancel_lock:
            if reset or key not in self._cancel:
                self._cancel[key] = threading.Event()
            return self._cancel[key]

    def cancel(self, session: str | None) -> str:
        self.cancel_event(session).set()
        return "Cancelling after the current batch…"

    def preset_settings(self, preset: str) -> tuple[int, str]:
        """What picking `preset` sets in the tab: its steps, and a line on what it costs and risks."""
        settings = self.model.settings(preset=preset)
        return settings.steps, (f"**{preset}**: {PRESETS[preset].summary} ({settings.unet_evaluations()} UNet "
                                "evaluations per augmentation).")

    def _options(self, train_dir: str | None, *, per_image: int, seed: int, lam: float, steps: int,
                 resolution: int, batch_size: int, all_prompts: bool, feather: int, preset: str | None,
                 tell: Callable[..., Any]) -> tuple[Path, AugmentOptions, Any]:
        """(the folder, the run's options, its loaded generator: None on a Ray cluster) from the tab's values."""
        path = self.folder(train_dir)
        settings = self.model.settings(preset=preset or None, steps=int(steps), resolution=int(resolution))
        generator = None
        if self.ray_address:  # the cluster's workers load the model; this process plans and commits
            tell(0, desc=f"Submitting to the Ray cluster at {self.ray_address}…")
            where: dict[str, Any] = dict(runner="ray", ray_address=self.ray_address)
        else:
            tell(0, desc=f"Loading model {self.model.model}…")
            generator = self.model.generator(settings)
            settings, where = generator.settings, {}
        options = AugmentOptions(settings=settings, mix=MixOptions(lam=float(lam), feather=int(feather)),
                                 per_image=int(per_image), batch_size=int(batch_size), seed=int(seed),
                                 all_prompts=bool(all_prompts), scorer="auto", **where)
        return path, options, generator

    def _estimate(self, path: Path, options: AugmentOptions, generator, preset: str | None) -> Estimate:
        """The run's estimate; the time of one calibration batch is measured once per settings and batch size."""
        key = (options.settings, options.batch_size)
        with self._calibrated_lock:
            known = self._calibrated.get(key)
        estimate = estimate_job(path, options, workspace=self.workspace, fractals=self.fractals, generator=generator,
                                preset=preset or self.model.preset, seconds_per_augmentation=known,
                                prompts=self.workspace.manifest.get_prompt_library())
        if known is None and estimate.seconds_per_augmentation is not None:
            with self._calibrated_lock:
                self._calibrated[key] = estimate.seconds_per_augmentation
        return estimate

    def estimate(self, train_dir: str | None, *, per_image: int, steps: int, resolution: int, batch_size: int,
                 all_prompts: bool, preset: str | None = None, seed: int = 0,
                 progress: Callable[..., Any] | None = None) -> tuple[str, dict]:
        """What a run with these values would cost, before it runs: (Markdown lines, the Estimate as a dict)."""
        tell = progress or (lambda *args, **kwargs: None)
        path, options, generator = self._options(train_dir, per_image=per_image, seed=seed, lam=0.2, steps=steps,
                                                 resolution=resolution, batch_size=batch_size,
                                                 all_prompts=all_prompts, feather=0, preset=preset, tell=tell)
        tell(0.5, desc="Timing one batch…")
        estimate = self._estimate(path, options, generator, preset)
        return estimate_markdown(estimate), estimate.to_dict()

    def run(self, train_dir: str | None, *, per_image: int, seed: int, lam: float, steps: int, resolution: int,
            batch_size: int, all_prompts: bool, feather: int = 0, preset: str | None = None,
            session: str | None = None, progress: Callable[..., Any] | None = None) -> tuple[str, dict]:
        """Bulk augmentation of a class-folder dataset into the workspace; resumes when run again.

        `preset` (None: the app's) chooses the generation settings; `steps` given beside it wins over its steps.
        Returns (the tab's line, the RunSummary as a dict with the run's ``estimate``). `progress(fraction_or_pair,
        desc=…)` is told as it goes: the estimate first, then the measured rate and time left.
        """
        cancel = self.cancel_event(session, reset=True)
        tell = progress or (lambda *args, **kwargs: None)
        path, options, generator = self._options(train_dir, per_image=per_image, seed=seed, lam=lam, steps=steps,
                                                 resolution=resolution, batch_size=batch_size,
                                                 all_prompts=all_prompts, feather=feather, preset=preset, tell=tell)
        estimate = self._estimate(path, options, generator, preset)
        tell(0, desc=f"Estimate: {estimate.line()}")

        def report(p: RunProgress) -> None:
            tell((p.done, max(p.total, 1)), desc=f"Augmenting: {p.describe()}", unit="augmentations")

        summary = run_dataset_job(self.workspace, path, options,
                                  prompts=self.workspace.manifest.get_prompt_library(), fractals=self.fractals,
                                  generator=generator, progress=report, cancel=cancel)
        return run_message(summary), {**dataclasses.asdict(summary), "estimate": estimate.to_dict()}
