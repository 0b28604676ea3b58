"""What every tab shares: the stage labels, the model's queue, the styles, and how errors reach the page."""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

import gradio as gr

from ..errors import DiffuseMixError

__all__ = ["CSS", "MODEL_QUEUE", "STAGE_LABELS", "cell_of_row", "error_to_gradio", "scrub_paths", "show_errors"]

STAGE_LABELS = {
    "original": "I · original",
    "generated": "Î · generated",
    "mask": "M · mask",
    "hybrid": "H · hybrid",
    "fractal": "F · fractal",
    "final": "A · final",
}
MODEL_QUEUE = "model"  # one queue for every handler that runs the diffusion model
CSS = """
#test-model-banner {border-left: 4px solid #d97706; padding-left: 0.6em;}
footer {display: none !important;}
#curate-gallery .thumbnail-item img {object-position: top;}
.hint {font-size: 0.85em; opacity: 0.8;}
#curate-gallery .caption-label, .group-gallery .caption-label {white-space: normal; max-width: none; left: 0; right: 0; bottom: 0;
  font-size: 11px; line-height: 1.25; border-radius: 0;}
#review-panel img {width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated;}
#bulk-confirm, #h-confirm, #auto-confirm {border-left: 4px solid #dc2626; padding-left: 0.6em; align-items: center;}
"""
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s'\"/]+/)+([^\s'\"/]*)")


def scrub_paths(text: str) -> str:
    """A message without server paths: every absolute path is cut to its last part."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "/", text)


def error_to_gradio(fn: Callable) -> Callable:
    """Show project errors (one sentence with the remedy, no server paths) as Gradio errors instead of a
    traceback: API callers get them raised."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DiffuseMixError as exc:
            raise gr.Error(scrub_paths(str(exc)), print_exception=False) from exc

    return wrapper


def show_errors(fn: Callable, at: int, outputs: int, *, clears: bool = False) -> Callable:
    """Like error_to_gradio, but the reason stays readable where it happened: it goes to output `at` (of
    `outputs`; a message next to the button) and the other outputs keep what they show (no 'Error' on them).
    With `clears`, `fn` does not return the message (the last output): success empties it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
            return (*(out if isinstance(out, tuple) else (out,)), "") if clears else out
        except (DiffuseMixError, gr.Error) as exc:
            out: list[Any] = [gr.skip()] * outputs
            out[at] = "❌ " + scrub_paths(str(exc.message if isinstance(exc, gr.Error) else exc))
            return out[0] if outputs == 1 else tuple(out)

    return wrapper


def cell_of_row(column: int) -> Callable:
    """A select handler giving column `column` of the clicked row of a Dataframe."""

    def cell(evt: gr.SelectData):
        return evt.row_value[column] if evt.row_value else gr.skip()

    return cell
