"""The Explore tab: one image, its six stages (I, Î, M, H, F, A), re-mixing without the model, Approve / Reject,
A at full size, two presets side by side (``compare.py``). Named endpoints: /augment, /remix, /all_prompts,
/approve, /reject, /download_final, /compare."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..engine.diffusemix import STAGE_NAMES
from ..engine.masks import ALL_MASK_KINDS, MASK_KINDS
from ..engine.test_models import UNTRAINED_NOTE
from ..studio.explore import RANDOM, describe_choices
from ..studio.state import Studio
from .common import MODEL_QUEUE, STAGE_LABELS, error_to_gradio, show_errors
from .compare import build_compare

__all__ = ["build_explore"]

EXAMPLES = [Path(__file__).resolve().parents[2] / "examples" / name for name in ("landscape.png", "still_life.png")]


def build_explore(studio: Studio, status_md: gr.Markdown) -> SimpleNamespace:
    """Lay out and wire the tab (inside the Blocks); gives the prompt dropdown (the Prompt library tab updates it)."""
    explore, config = studio.explore, studio.config
    mask_choices = [RANDOM, *MASK_KINDS, *[k for k in ALL_MASK_KINDS if k not in MASK_KINDS]]
    model_events = dict(concurrency_limit=1, concurrency_id=MODEL_QUEUE)

    with gr.Tab("Explore", id="explore"):
        if config.is_test_model:
            gr.Markdown(f"⚠️ `{config.model}` is an **{UNTRAINED_NOTE}**; start with "
                        "`--model timbrooks/instruct-pix2pix` for real results.", elem_id="test-model-banner")
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                # image_mode=None: the upload's path as it came; Gradio would otherwise decode and convert any
                # non-RGB image (a 62 MP grayscale PNG included) before the pixel limit is checked
                image_in = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=220,
                                    elem_id="input-image", image_mode=None)
                gr.Examples([[str(p)] for p in EXAMPLES if p.exists()], inputs=[image_in], label="Examples")
            with gr.Column(scale=1, min_width=260):
                prompt_dd = gr.Dropdown([RANDOM] + studio.prompts.library().enabled(), value=RANDOM, label="Prompt")
                mask_dd = gr.Dropdown(mask_choices, value=RANDOM, label="Mask (the part of I kept)")
                fractal_dd = gr.Dropdown([RANDOM, *studio.fractals.ids], value=RANDOM, label="Fractal")
                fractal_up = gr.Image(label="…or upload a fractal", type="filepath", height=90, sources=["upload"],
                                      image_mode=None)
            with gr.Column(scale=1, min_width=260):
                lam = gr.Slider(0.0, 1.0, value=0.2, step=0.01, label="λ (fractal blend)", elem_id="lam")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                label_in = gr.Textbox(label="Class label (used when saved)", placeholder="unlabelled")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                    all_btn = gr.Button("All prompts")
                explore_msg = gr.Markdown(elem_id="explore-msg")  # Generate's, All prompts' and re-mix's errors
                api_only = gr.Button(visible=False)  # the named endpoints /augment, /remix, /all_prompts
                with gr.Row():
                    approve_btn = gr.Button("Approve", elem_id="approve")
                    reject_btn = gr.Button("Reject", variant="stop", elem_id="reject")
                result_id = gr.Textbox(label="Result id (type ws-N and Enter to open augmentation N)", max_lines=1,
                                       elem_id="result-id")
                save_msg = gr.Markdown(elem_id="save-msg")
                final_full = gr.DownloadButton("Download A at full size", size="sm", elem_id="download-final")
        with gr.Row(equal_height=True):
            stage_images = [gr.Image(label=STAGE_LABELS[name], format="png", interactive=False, height=200,
                                     elem_classes=["stage"], elem_id=f"stage-{name}", buttons=["download", "fullscreen"])
                            for name in STAGE_NAMES]
        drawn_md = gr.Markdown(elem_id="drawn")  # what A is made of, drawn or chosen: under the stages
        with gr.Row():
            with gr.Column(scale=2):
                grid = gr.Gallery(label="All prompts (Î per prompt; click one to open it)", columns=5, height=300)
            with gr.Column(scale=1):
                choices_json = gr.JSON(label="Choices", elem_id="choices", height=300)
        grid_ids = gr.State([])
        build_compare(studio, image_in, prompt_dd, seed, status_md)  # the "Compare presets" accordion, /compare

    # ---------------------------------------------------------------------------------------------- callbacks
    def augment(image, prompt, mask, lam, seed, fractal=RANDOM, fractal_upload=None, progress=gr.Progress()):
        """Generate Î for one image and mix it: the six stages and the choices (with a result_id for /remix)."""
        return explore.augment(image, prompt, mask, lam, seed, fractal, fractal_upload, progress=progress)

    def remix(result_id, lam, mask=RANDOM, fractal=RANDOM, fractal_upload=None):
        """Re-mix a previous result (its id from /augment, or 'ws-N') with another λ, mask or fractal; no model call.
        "random" keeps what was drawn for that result."""
        return explore.remix(result_id, lam, mask, fractal, fractal_upload) if result_id else (gr.skip(),) * 7

    def all_prompts(image, mask, lam, seed, progress=gr.Progress()):
        """Every enabled prompt on one image (same seed): a gallery of Î captioned with the prompt."""
        return explore.all_prompts(image, mask, lam, seed, progress=progress)

    def approve(result_id, lam, mask, fractal, fractal_upload, label):
        """Approve the result as shown: a message naming the workspace id."""
        return scored(explore.decide("approved", result_id, lam, mask, fractal, fractal_upload, label))

    def reject(result_id, lam, mask, fractal, fractal_upload, label):
        """Reject the result as shown: a message naming the workspace id."""
        return scored(explore.decide("rejected", result_id, lam, mask, fractal, fractal_upload, label))

    def scored(message: str) -> str:
        """A saved item gets the scores the rest of the workspace has, in the background (the Jobs tab lists it)."""
        studio.jobs.score_saved()
        return message

    def download_final(result_id, lam, mask, fractal, fractal_upload):
        """A at full size as shown (the stage images are capped at a display size)."""
        return explore.final_full(result_id, lam, mask, fractal, fractal_upload)

    def open_result(result_id):
        """Show a result as it was made (a workspace item 'ws-N', or a recent 'r-…'): its stages and choices."""
        result_id = (result_id or "").strip()
        return explore.view(result_id, explore.record(result_id)) if result_id else (gr.skip(),) * 7

    def prepare_download(result_id, lam, mask, fractal, fractal_upload):
        """The download button holds A at full size as shown now, so one click serves it."""
        if not result_id:
            return gr.DownloadButton(value=None)
        return gr.DownloadButton(value=explore.final_full(result_id, lam, mask, fractal, fractal_upload))

    def pick_from_grid(ids: list[str], evt: gr.SelectData):
        return (*explore.view(ids[evt.index], explore.record(ids[evt.index])), ids[evt.index])

    def drawn(choices):
        """What A is made of, in words under the stages and in each dropdown's note (its value is left as is)."""
        text, *notes = describe_choices(choices)
        return text, *(gr.Dropdown(info=note) for note in notes)

    # ---------------------------------------------------------------------------------------------- wiring
    stage_outputs = [*stage_images, choices_json]
    set_id = dict(fn=lambda c: (c or {}).get("result_id", ""), inputs=choices_json, outputs=result_id,
                  api_visibility="private", queue=False)
    augment_inputs = [image_in, prompt_dd, mask_dd, lam, seed, fractal_dd, fractal_up]
    remix_inputs = [result_id, lam, mask_dd, fractal_dd, fractal_up]
    all_inputs = [image_in, mask_dd, lam, seed]
    # API callers get errors raised (the named endpoints hang on a hidden button); the buttons show an error in the
    # message under Generate and leave the stages as they are
    api_only.click(error_to_gradio(augment), augment_inputs, stage_outputs, api_name="augment", **model_events)
    api_only.click(error_to_gradio(remix), remix_inputs, stage_outputs, api_name="remix", concurrency_limit=4)
    api_only.click(error_to_gradio(all_prompts), all_inputs, [grid, grid_ids], api_name="all_prompts",
                   **model_events)
    generate_btn.click(show_errors(augment, 7, 8, clears=True), augment_inputs, [*stage_outputs, explore_msg],
                       api_visibility="private", **model_events,
                       ).then(**set_id).then(studio.model.status, None, status_md, api_visibility="private",
                                            queue=False)
    gr.on([lam.release, mask_dd.input, fractal_dd.input, fractal_up.change], show_errors(remix, 7, 8, clears=True),
          remix_inputs, [*stage_outputs, explore_msg], api_visibility="private", trigger_mode="always_last",
          concurrency_limit=4, show_progress="hidden")
    all_btn.click(show_errors(all_prompts, 2, 3, clears=True), all_inputs, [grid, grid_ids, explore_msg],
                  api_visibility="private", **model_events,
                  ).then(studio.model.status, None, status_md, api_visibility="private", queue=False)
    grid.select(error_to_gradio(pick_from_grid), grid_ids, [*stage_outputs, result_id], api_visibility="private")
    choices_json.change(drawn, choices_json, [drawn_md, prompt_dd, mask_dd, fractal_dd], api_visibility="private",
                        queue=False)  # after Generate, a re-mix, a grid pick
    # A at full size is prepared as soon as A changes: a click downloads the A shown (not the one before)
    choices_json.change(show_errors(prepare_download, 0, 1), remix_inputs, final_full, api_visibility="private",
                        concurrency_limit=4, show_progress="hidden")
    show_result = dict(fn=show_errors(open_result, 7, 8, clears=True), inputs=result_id,
                       outputs=[*stage_outputs, explore_msg], api_visibility="private")
    result_id.submit(**show_result)
    decide_inputs = [result_id, lam, mask_dd, fractal_dd, fractal_up, label_in]
    approve_btn.click(error_to_gradio(approve), decide_inputs, save_msg, api_name="approve", concurrency_limit=8)
    reject_btn.click(error_to_gradio(reject), decide_inputs, save_msg, api_name="reject", concurrency_limit=8)
    api_only.click(error_to_gradio(download_final), decide_inputs[:5], final_full, api_name="download_final")
    return SimpleNamespace(prompt_dd=prompt_dd, result_id=result_id, show_result=show_result)
