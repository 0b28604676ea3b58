"""Measuring prompts by training, from the app: a per-prompt ``train`` run on the workspace (baseline + one arm per
enabled prompt with Î, K seeds) against a validation folder, with progress and time left, cancellable per session;
its gains are stored in the workspace, so the prompt library shows them when it ends.

The validation folder is an upload (``upload:<id>``, from the Dataset tab) or, where the app allows typed folders, a
folder on the server (the Dataset tab's rules). The outputs go to ``<exports>/prompt-study/<time>/``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..engine.fractals import FractalLibrary
from ..errors import BadArgumentError
from ..training.arms import measured_prompts, plan_arms
from ..training.models import RESNET_SHAPES
from ..training.settings import TrainSettings
from ..training.trainer import train_arms
from ..workspace.folder import Workspace

__all__ = ["MEASURE_MODELS", "PromptStudy"]

MEASURE_MODELS = ("resnet-tiny", "resnet18", "resnet50")


class PromptStudy:
    """Per-prompt training runs on the app's workspace, one cancel per session."""

    def __init__(self, workspace: Workspace, folder: Callable[[str | None], Path], out_root: Path,
                 fractals: FractalLibrary, device: str = "auto") -> None:
        self.workspace, self.folder, self.out_root = workspace, folder, Path(out_root)
        self.fractals, self.device = fractals, device
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def cancel_event(self, session: str | None, *, reset: bool = False) -> threading.Event:
        key = session or ""
        with self._lock:
            if reset or key not in self._cancel:
                self._cancel[key] = threading.Event()
            return self._cancel[key]

    def cancel(self, session: str | None) -> str:
        self.cancel_event(session).set()
        return "⏹ Cancelling: the run stops within a batch."

    def run(self, val_dir: str | None, *, model: str = "resnet-tiny", epochs: int = 5, repeats: int = 3,
            size: int = 64, session: str | None = None, progress: Callable[..., Any] | None = None
            ) -> tuple[str, str | None, str | None]:
        """Train baseline and one arm per measured prompt on `repeats` seeds; (summary.md's text, the bar chart's
        path, the heat map's path). TrainingCancelled when cancelled."""
        if model not in MEASURE_MODELS and model not in RESNET_SHAPES:
            raise BadArgumentError(f"model must be one of {', '.join(MEASURE_MODELS)}, got {model!r}.")
        val = self.folder(val_dir)
        cancel = self.cancel_event(session, reset=True)
        tell = progress or (lambda *args, **kwargs: None)
        prompts = measured_prompts(self.workspace.path, "approved")
        arms = plan_arms(["baseline"], per_prompt=prompts)
        settings = TrainSettings(model=model, epochs=int(epochs), size=int(size), batch_size=32, device=self.device,
                                 workers=0)
        out = self.out_root / time.strftime("%Y%m%d-%H%M%S")
        total = len(arms) * int(repeats) * int(epochs)
        tell((0, total), desc=f"Training {len(arms)} arms × {repeats} seeds × {epochs} epochs = {total} arm-epochs")

        def on_epoch(row: dict, done: int, all_: int, left: float | None) -> None:
            tell((done, all_), desc=f"{row['arm']} seed {row['seed']} epoch {row['epoch']}: top-1 {row['top1']:.1f}%"
                                    + (f", about {left / 60:.1f} min left" if left is not None else ""))

        report = train_arms(self.workspace.path, val, out, arms=arms, settings=settings, repeats=int(repeats),
                            progress=False, fractals=self.fractals, on_epoch=on_epoch, cancel=cancel)
        text = report.summary_md.read_text(encoding="utf-8")
        return (text + f"\n\nStored {report.stored_gains} prompt gain(s) in the workspace; outputs in `{out.name}`.",
                None if report.prompt_gains_png is None else str(report.prompt_gains_png),
                None if report.gains_png is None else str(report.gains_png))
