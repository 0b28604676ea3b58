"""The Explore tab's "Compare presets" accordion: the current image's Î under two presets, side by side, and what
each cost. Named endpoint: /compare. The work is ``studio/compare.py``."""

from __future__ import annotations

import gradio as gr

from ..studio.compare import COMPARE_COLUMNS, preset_choices
from ..studio.state import Studio
from .common import MODEL_QUEUE, error_to_gradio, show_errors

__all__ = ["build_compare"]


def build_compare(studio: Studio, image_in: gr.Image, prompt_dd: gr.Dropdown, seed: gr.Number,
                  status_md: gr.Markdown) -> None:
    """Lay out and wire the accordion (inside the Explore tab), reading the tab's image, prompt and seed."""
    choices = preset_choices()
    with gr.Accordion("Compare presets", open=False, elem_id="compare"):
        gr.Markdown("Generate this image's Î under two presets with the prompt and seed above, and see what the "
                    "cheaper one costs and changes. Seconds are one run's wall time: compare again for a steadier figure. For a whole folder: `python -m diffusemix_core "
                    "compare-settings`.", elem_classes=["hint"])
        with gr.Row(equal_height=True):
            preset_a = gr.Dropdown(choices, value="reference", label="Preset A", elem_id="compare-a")
            preset_b = gr.Dropdown(choices, value="fast", label="Preset B", elem_id="compare-b")
            run_btn = gr.Button("Compare", variant="primary", elem_id="compare-run")
        compare_msg = gr.Markdown(elem_id="compare-msg")
        with gr.Row(equal_height=True):
            image_a = gr.Image(label="Î · A", format="png", interactive=False, height=240, elem_id="compare-image-a")
            image_b = gr.Image(label="Î · B", format="png", interactive=False, height=240, elem_id="compare-image-b")
        table = gr.Dataframe(headers=COMPARE_COLUMNS, interactive=False, elem_id="compare-table")
        api_only = gr.Button(visible=False)  # the named endpoint /compare

    def compare(image, prompt, seed, a, b, progress=gr.Progress()):
        """The image's Î under preset A and under preset B (same prompt and seed; "random" draws the prompt as
        Generate does), the table (setting, preset, UNet evaluations, seconds, drift from I, SSIM of the two Î)
        and a line saying what B costs next to A."""
        return studio.compare.compare(image, prompt, seed, a, b, progress=progress)

    inputs, outputs = [image_in, prompt_dd, seed, preset_a, preset_b], [image_a, image_b, table, compare_msg]
    model_events = dict(concurrency_limit=1, concurrency_id=MODEL_QUEUE)
    api_only.click(error_to_gradio(compare), inputs, outputs, api_name="compare", **model_events)
    run_btn.click(show_errors(compare, 3, 4), inputs, outputs, api_visibility="private", **model_events,
                  ).then(studio.model.status, None, status_md, api_visibility="private", queue=False)
