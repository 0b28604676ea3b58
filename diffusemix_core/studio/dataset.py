"""The Dataset tab's work without Gradio: which folder a bulk run may read, the uploaded datasets, the run itself.

A run reads either an uploaded zip (by its handle ``upload:<id>``) or a folder typed by the user. A typed folder is
server data, so :func:`typed_dataset_folder` is a sandbox: typed folders only where the app allows them (on
loopback, or inside ``--data-root``), the path resolved before the check (``..`` and links cannot climb out), and
no link inside that leads outside the data root. Each browser session can cancel its own run.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, Callable

from ..bulk.options import AugmentOptions, MixOptions
from ..bulk.runner import RunProgress, run_augment
from ..bulk.stages import RunSummary
from ..bulk.summary import settings_changed_note, summary_line
from ..checks import format_size
from ..engine.fractals import FractalLibrary
from ..errors import BadArgumentError
from ..workspace.files import links_outside
from ..workspace.folder import Workspace
from ..workspace.uploads import UploadedDataset, Uploads
from .model import ModelHolder, gpu_task

__all__ = ["DatasetRuns", "describe_upload", "run_message", "typed_dataset_folder"]

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

    def run(self, train_dir: str | None, *, per_image: int, seed: int, lam: float, steps: int, resolution: int,
            batch_size: int, all_prompts: bool, feather: int = 0, session: str | None = None,
            progress: Callable[..., Any] | None = None) -> tuple[str, dict]:
        """Bulk augmentation of a class-folder dataset into the workspace; resumes when run again.

        Returns (the tab's line, the RunSummary as a dict). `progress(fraction_or_pair, desc=…)` is told as it goes.
        """
        path = self.folder(train_dir)
        cancel = self.cancel_event(session, reset=True)
        tell = progress or (lambda *args, **kwargs: None)

        def report(p: RunProgress) -> None:
            tell((p.done, max(p.total, 1)), desc=f"Augmenting: {p.describe()}", unit="augmentations")

        generator = None
        if self.ray_address:  # the cluster's workers load the model; this process plans and commits
            tell(0, desc=f"Submitting to the Ray cluster at {self.ray_address}…")
            settings = self.model.settings(steps=int(steps), resolution=int(resolution))
            where: dict[str, Any] = dict(runner="ray", ray_address=self.ray_address)
        else:
            tell(0, desc=f"Loading model {self.model.model}…")
            generator = self.model.generator(steps=int(steps), resolution=int(resolution))
            settings, where = generator.settings, {}
        options = AugmentOptions(settings=settings, mix=MixOptions(lam=float(lam), feather=int(feather)),
                                 per_image=int(per_image), batch_size=int(batch_size), seed=int(seed),
                                 all_prompts=bool(all_prompts), scorer="auto", **where)
        summary = run_dataset_job(self.workspace, path, options,
                                  prompts=self.workspace.manifest.get_prompt_library(), fractals=self.fractals,
                                  generator=generator, progress=report, cancel=cancel)
        return run_message(summary), dataclasses.asdict(summary)
