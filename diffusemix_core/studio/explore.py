"""The Explore tab's work without Gradio: generate one image's augmentation, re-mix it, decide on it, download A.

A result is named by an id: ``r-…`` for a recent result kept in memory (:class:`~.served.ResultCache`), ``ws-N``
for augmentation N of the workspace. Re-mixing needs no model (a :class:`~diffusemix_core.engine.diffusemix.Mixer`
over the current prompt library). A decision saves the result as shown (see :meth:`Explore.decide` and
:func:`same_as_stored`). Errors are DiffuseMixError sentences; the tab shows them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..engine.diffusemix import STAGE_NAMES, AugmentationRecord, DiffuseMix, Mixer
from ..engine.fractals import FractalLibrary
from ..engine.test_models import UNTRAINED_NOTE
from ..errors import BadArgumentError, WorkspaceError
from ..workspace.folder import Workspace
from .model import ModelHolder, gpu_task
from .served import ResultCache, StageFiles, load_interactive

__all__ = ["LAM_TOLERANCE", "MAX_ID", "RANDOM", "Explore", "augmentation_id", "describe_choices", "download_name",
           "same_as_stored"]

RANDOM = "random"  # a dropdown's "draw it" value; on a re-mix: keep what was drawn
MAX_ID = 2**63 - 1  # SQLite's largest integer: ids beyond it cannot name a row
LAM_TOLERANCE = 1e-6  # λ values closer than this are the same λ (float noise of the slider and of JSON)
MASK_WORDS = {"left": "left half", "right": "right half", "top": "top half", "bottom": "bottom half",
              "box": "centre box"}
Progress = Callable[..., Any]


def _no_progress(*_args, **_kwargs) -> None:
    return None


def chosen(value: Any) -> Any:
    """A dropdown's value as a choice: None for "random" (or nothing), the value otherwise."""
    return None if value in (None, "", RANDOM) else value


def augmentation_id(value: Any) -> int:
    """A workspace augmentation id from a number or its text, or BadArgumentError naming the value."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_ID:
        return int(text)
    raise BadArgumentError(f"No augmentation #{text}: an id is a whole number from 1 to {MAX_ID}; pick one from "
                           "the Curate gallery (or list them with `status` on the command line).")


def same_as_stored(record: AugmentationRecord, stored: dict) -> bool:
    """Whether `record` (a workspace item as shown) makes the same A as its stored row: the same mask, fractal and
    feather, and a λ within LAM_TOLERANCE of the stored one (a slider's 0.1 + 0.2 is the stored 0.3)."""
    return (record.mask_kind == stored["mask"] and record.fractal_id == stored["fractal"]
            and int(record.feather) == int(stored["feather"])
            and math.isclose(float(record.lam), float(stored["lam"]), rel_tol=0.0, abs_tol=LAM_TOLERANCE))


def describe_choices(choices: dict | None) -> tuple[str, str | None, str | None, str | None]:
    """What A is made of, in words (Markdown) and as the notes of the prompt, mask and fractal choices."""
    if not choices:
        return "", None, None, None
    kept = MASK_WORDS.get(choices.get("mask"), choices.get("mask"))
    text = (f"**A** = prompt **{choices.get('prompt')}** · mask **{choices.get('mask')}** ({kept} of I kept) · "
            f"fractal **{choices.get('fractal')}** · λ **{float(choices.get('lam', 0)):.2f}** · "
            f"seed {choices.get('seed')}")
    return (text, f"this A: {choices.get('prompt')}", f"this A: {choices.get('mask')} ({kept} kept)",
            f"this A: {choices.get('fractal')}")


@gpu_task
def generate_record(engine: DiffuseMix, image: np.ndarray, **choices) -> AugmentationRecord:
    """The GPU-bound step of Generate (decorated with spaces.GPU on ZeroGPU)."""
    return engine.augment(image, **choices)


@gpu_task
def generate_all_prompts(engine: DiffuseMix, image: np.ndarray, **choices) -> list[AugmentationRecord]:
    """The GPU-bound step of All prompts (decorated with spaces.GPU on ZeroGPU)."""
    return engine.augment_all_prompts(image, **choices)


class Explore:
    """Generate, re-mix, decide and download, for every browser session at once (state: the caches)."""

    def __init__(self, workspace: Workspace, model: ModelHolder, fractals: FractalLibrary, results: ResultCache,
                 files: StageFiles, *, max_pixels: int) -> None:
        self.workspace, self.model, self.fractals = workspace, model, fractals
        self.results, self.files, self.max_pixels = results, files, max_pixels

    # -- reading results -----------------------------------------------------------------------------------
    def load(self, image: Any, what: str = "image") -> np.ndarray:
        if image is None:
            raise BadArgumentError(f"No {what} given: upload one or pick an example first.")
        return load_interactive(image, max_pixels=self.max_pixels)

    def record(self, result_id: str) -> AugmentationRecord:
        """The result named `result_id`: a recent one ('r-…') or a workspace item ('ws-N')."""
        result_id = (result_id or "").strip()
        record = self.results.get(result_id)
        if record is not None:
            return record
        if result_id.startswith("ws-"):
            return self.workspace_record(augmentation_id(result_id[3:]))
        raise WorkspaceError(f"No result {result_id!r} here (recent results are kept while memory allows, and saved "
                             "ones as 'ws-N'); generate again.")

    def workspace_record(self, aug_id: int) -> AugmentationRecord:
        """Augmentation N of the workspace, composed from the store, if it is within the interactive pixel limit."""
        row = self.workspace.manifest.get_augmentation(augmentation_id(aug_id))
        if (row["width"] or 0) * (row["height"] or 0) > self.max_pixels:
            raise WorkspaceError(f"Augmentation #{row['id']} is {row['width']}x{row['height']}, over the "
                                 f"{self.max_pixels / 1e6:.0f} MP limit for interactive use; export it, or start the "
                                 "app with a larger --max-pixels.")
        return self.workspace.record_from_row(row)

    def view(self, result_id: str, record: AugmentationRecord) -> tuple:
        """The six stage files (display-sized) and the choices (with the result id and the test-model note)."""
        choices = record.choices()
        choices["result_id"] = result_id
        if record.is_test_model:
            choices["note"] = UNTRAINED_NOTE
        return (*self.files.stage_paths(result_id, record, STAGE_NAMES), choices)

    def remixed(self, result_id: str, lam, mask, fractal, fractal_upload) -> AugmentationRecord:
        """The result re-mixed with λ and the chosen mask and fractal ("random": what was drawn for it)."""
        record = self.record(result_id)
        fractal_arg = self.load(fractal_upload, "fractal") if fractal_upload is not None else chosen(fractal)
        return Mixer(prompts=self.workspace.manifest.get_prompt_library(), fractals=self.fractals).remix(
            record, lam=float(lam), mask=chosen(mask), fractal=fractal_arg)

    # -- the tab's actions ---------------------------------------------------------------------------------
    def engine(self, progress: Progress) -> DiffuseMix:
        progress(0.05, desc=f"Loading model {self.model.model} (first use only)…")
        return DiffuseMix(prompts=self.workspace.manifest.get_prompt_library(), fractals=self.fractals,
                          generator=self.model.generator())

    def augment(self, image, prompt, mask, lam, seed, fractal=RANDOM, fractal_upload=None, *,
                progress: Progress = _no_progress) -> tuple:
        """Generate Î for one image and mix it: the six stage files and the choices (with a result id)."""
        original = self.load(image)
        fractal_arg = self.load(fractal_upload, "fractal") if fractal_upload is not None else chosen(fractal)
        engine = self.engine(progress)
        progress(0.2, desc="Generating Î…")
        record = generate_record(engine, original, seed=int(seed), lam=float(lam), prompt=chosen(prompt),
                                 mask=chosen(mask), fractal=fractal_arg)
        return self.view(self.results.put(record), record)

    def remix(self, result_id, lam, mask=RANDOM, fractal=RANDOM, fractal_upload=None) -> tuple:
        """Re-mix a previous result with another λ, mask or fractal; no model call."""
        return self.view(result_id, self.remixed(result_id, lam, mask, fractal, fractal_upload))

    def all_prompts(self, image, mask, lam, seed, *, progress: Progress = _no_progress) -> tuple[list, list]:
        """Every enabled prompt on one image (same seed): (Î file, prompt) per prompt, and the result ids."""
        original = self.load(image)
        engine = self.engine(progress)
        prompts = engine.prompts.enabled()
        progress((0, len(prompts)), desc=f"Generating {len(prompts)} prompts: {prompts[0] if prompts else ''}…")

        def told(done: int, total: int) -> None:  # after each prompt (each batch of prompts on a GPU)
            upcoming = f"; next: {prompts[done]}" if done < len(prompts) else ""
            progress((done, total), desc=f"{done} of {total} prompts done{upcoming}", unit="prompts")

        # one prompt at a time on a CPU (batching gains nothing there), so the progress moves per prompt
        batch = 1 if str(engine.settings.device).startswith("cpu") else 4
        records = generate_all_prompts(engine, original, mask=chosen(mask), seed=int(seed), lam=float(lam),
                                       batch_size=batch, progress=told)
        ids = [self.results.put(r) for r in records]
        return [(self.files.path(f"{rid}/generated", r.generated), r.prompt) for rid, r in zip(ids, records)], ids

    def decide(self, status: str, result_id, lam, mask, fractal, fractal_upload, label) -> str:
        """Approve / reject the result as shown; the last decision wins, from any session, and all are recorded.

        A workspace item ('ws-N') shown as stored (:func:`same_as_stored`) is decided on itself; re-mixed (another
        λ, mask or fractal), it is stored as a new augmentation linked to N. A recent result ('r-…') is stored once
        per distinct choice and label; deciding again changes its status.
        """
        if not result_id:
            raise BadArgumentError("No result to decide on: generate one first.")
        record = self.remixed(result_id, lam, mask, fractal, fractal_upload)
        if result_id.strip().startswith("ws-"):
            aug_id = augmentation_id(result_id.strip()[3:])
            if same_as_stored(record, self.workspace.manifest.get_augmentation(aug_id)):
                decision = self.workspace.review(status, ids=[aug_id], origin="app")
                return f"Marked #{aug_id} {status} (decision #{decision.batch_id})."
            new_id = self.workspace.save_record(record, status=status, origin="app", remixed_from=aug_id)
            return f"Saved as #{new_id} ({status}), re-mixed from #{aug_id}."
        record = dataclasses.replace(record, label=(label or "").strip() or None)
        return f"Saved as #{self.workspace.save_record(record, status=status, origin='app')} ({status})."

    def final_full(self, result_id, lam, mask, fractal, fractal_upload) -> str:
        """A file of A at full size as shown (the stage images are capped at a display size)."""
        if not result_id:
            raise BadArgumentError("No result to download: generate one first.")
        record = self.remixed(result_id, lam, mask, fractal, fractal_upload)
        key = f"{result_id}/final/{record.mask_kind}/{record.fractal_id}/{record.lam!r}"
        return self.files.path(key, record.final, full_size=True, name=download_name(record))


def _slug(text: Any, limit: int = 40) -> str:
    """Letters, digits, '-' and '_' of `text` (others become '-'), at most `limit` characters."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-_")[:limit] or "x"


def download_name(record: AugmentationRecord) -> str:
    """A file name saying what A is: 'A_cats-0_autumn_lam0.92_seed3_left_julia_001.png' (source, prompt, λ, seed,
    mask, fractal; a safe slug of each)."""
    source = str(Path(record.source).with_suffix("")) if record.source else "upload"  # 'cats/0.png' -> 'cats-0'
    return (f"A_{_slug(source)}_{_slug(record.prompt)}_lam{float(record.lam):.2f}_seed{record.requested_seed}_"
            f"{_slug(record.mask_kind, 12)}_{_slug(Path(str(record.fractal_id)).stem, 24)}.png")
