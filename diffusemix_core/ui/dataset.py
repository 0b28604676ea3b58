"""The Dataset tab: upload a zip of class folders (or name a folder where allowed), run the bulk augmentation into
the workspace, cancel it; pick a preset and see a run's cost before it starts. Named endpoints: /extract_zip,
/list_uploads, /delete_upload, /preset_settings, /estimate, /run_dataset (eight inputs, the app's preset),
/run_dataset_preset (with the mask feather and a preset), /cancel_run."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ..studio.model import APP_PRESETS
from ..studio.run_table import RUN_TABLE_COLUMNS, run_table as run_table_rows
from ..studio.state import Studio
from .common import MODEL_QUEUE, cell_of_row, error_to_gradio

__all__ = ["build_dataset"]


def build_dataset(studio: Studio, demo: gr.Blocks) -> None:
    """Lay out and wire the tab (inside the Blocks)."""
    runs, config = studio.datasets, studio.config
    model_events = dict(concurrency_limit=1, concurrency_id=MODEL_QUEUE)
    with gr.Tab("Dataset", id="dataset"):
        gr.Markdown("A dataset is a folder (or zip) of class folders: `train/<class>/<image>`. "
                    "Running it again resumes; a larger *m* adds only what is missing.")
        with gr.Row():
            zip_in = gr.File(label="Upload a zip of class folders", file_types=[".zip"], height=140,
                             elem_id="dataset-zip")
            with gr.Column():
                extract_btn = gr.Button("Extract into the workspace")
                train_dir = gr.Textbox(
                    label="Dataset (an upload's handle" + (", or a folder on this machine)" if config.typed_folders
                                                           else "; typed server folders are off)"),
                    interactive=config.typed_folders, elem_id="train-dir",
                )
        with gr.Accordion("Uploaded datasets", open=False):
            uploads_table = gr.Dataframe(headers=["id", "name", "classes", "files", "size", "uploaded"],
                                         interactive=False, wrap=True, elem_id="uploads")
            uploads_msg = gr.Markdown()
            with gr.Row():
                upload_id = gr.Textbox(label="Upload id (click a row)", max_lines=1, scale=2)
                use_upload = gr.Button("Use this dataset")
                delete_upload = gr.Button("Delete this upload", variant="stop")
        with gr.Row():
            per_image = gr.Slider(1, 20, value=1, step=1, label="m (augmentations per image)", elem_id="per-image")
            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
            lam = gr.Slider(0.0, 1.0, value=0.2, step=0.01, label="λ")
            feather = gr.Slider(0, 64, value=0, step=1, label="Mask feather (px)", elem_id="feather",
                                info="soft seam between I and Î; 0: a hard edge, the authors' code uses 20")
        with gr.Row():
            preset = gr.Dropdown(list(APP_PRESETS), value=studio.model.preset, label="Preset", elem_id="preset",
                                 info="reference: today's output; fast: 1/2 the UNet evaluations; fastest: 1/6")
            steps = gr.Slider(1, 100, value=studio.model.settings().steps, step=1, label="Steps",
                              info="set by the preset; a value of your own wins over it")
            resolution = gr.Dropdown([64, 128, 256, 384, 512, 768], value=config.resolution, label="Resolution")
            batch = gr.Slider(1, 16, value=4, step=1, label="Batch size")
            all_prompts = gr.Checkbox(label="All prompts (one per enabled prompt)")
        preset_msg = gr.Markdown(elem_id="preset-msg")
        with gr.Row():
            estimate_btn = gr.Button("Estimate", elem_id="estimate-dataset")
            run_btn = gr.Button("Run", variant="primary", elem_id="run-dataset")
            cancel_btn = gr.Button("Cancel", variant="stop")
        estimate_msg = gr.Markdown(elem_id="estimate-msg")
        estimate_json = gr.JSON(visible=False)
        run_msg = gr.Markdown(elem_id="run-msg")
        run_table = gr.Dataframe(headers=RUN_TABLE_COLUMNS, label="Run summary", interactive=False, wrap=True,
                                 elem_id="run-table")
        with gr.Accordion("Run summary as JSON", open=False):
            run_json = gr.JSON(label="Run summary", elem_id="run-summary")
        api_only = gr.Button(visible=False)  # the named endpoint /run_dataset

    # ---------------------------------------------------------------------------------------------- callbacks
    def run_dataset(train_dir, per_image, seed, lam, steps, resolution, batch_size, all_prompts, feather=0,
                    request: gr.Request = None, progress=gr.Progress()):
        """Bulk augmentation of a class-folder dataset into the workspace; resumes when run again."""
        return runs.run(train_dir, per_image=per_image, seed=seed, lam=lam, steps=steps, resolution=resolution,
                        batch_size=batch_size, all_prompts=all_prompts, feather=feather,
                        session=getattr(request, "session_hash", None), progress=progress)

    def run_dataset_preset(train_dir, per_image, seed, lam, steps, resolution, batch_size, all_prompts, feather=0,
                           preset="reference", request: gr.Request = None, progress=gr.Progress()):
        """A bulk run with a mask feather and a preset (reference, fast, fastest); `steps` wins over the preset's."""
        return runs.run(train_dir, per_image=per_image, seed=seed, lam=lam, steps=steps, resolution=resolution,
                        batch_size=batch_size, all_prompts=all_prompts, feather=feather, preset=preset,
                        session=getattr(request, "session_hash", None), progress=progress)

    def estimate(train_dir, per_image, seed, steps, resolution, batch_size, all_prompts, preset="reference",
                 progress=gr.Progress()):
        """What a run would cost: sources, augmentations to make, UNet evaluations per augmentation, time."""
        return runs.estimate(train_dir, per_image=per_image, seed=seed, steps=steps, resolution=resolution,
                             batch_size=batch_size, all_prompts=all_prompts, preset=preset, progress=progress)

    def cancel_run(request: gr.Request):
        return runs.cancel(getattr(request, "session_hash", None))

    # ---------------------------------------------------------------------------------------------- wiring
    uploads_outputs = [uploads_table, uploads_msg]
    extract_btn.click(error_to_gradio(runs.extract), zip_in, [train_dir, run_msg], api_name="extract_zip"
                      ).then(runs.uploads_table, None, uploads_outputs, api_visibility="private")
    uploads_table.select(cell_of_row(0), None, upload_id, api_visibility="private")
    use_upload.click(lambda i: f"upload:{i.strip()}" if i and i.strip() else gr.skip(), upload_id, train_dir,
                     api_visibility="private")
    delete_upload.click(error_to_gradio(runs.delete_upload), upload_id, uploads_msg, api_name="delete_upload"
                        ).then(runs.uploads_table, None, uploads_outputs, api_name="list_uploads")
    run_inputs = [train_dir, per_image, seed, lam, steps, resolution, batch, all_prompts]
    run_outputs = [run_msg, run_json]
    # /run_dataset keeps its eight inputs (a mask feather of 0, as before); the Run button also sends the feather
    api_only.click(error_to_gradio(run_dataset), run_inputs, run_outputs, api_name="run_dataset", **model_events)
    preset.change(error_to_gradio(runs.preset_settings), preset, [steps, preset_msg], api_name="preset_settings")
    estimate_inputs = [train_dir, per_image, seed, steps, resolution, batch, all_prompts, preset]
    estimate_outputs = [estimate_msg, estimate_json]
    estimate_btn.click(error_to_gradio(estimate), estimate_inputs, estimate_outputs, api_name="estimate",
                       **model_events)
    # Run shows the estimate first (its calibration is kept, so the run does not time it again), then runs
    run_btn.click(error_to_gradio(estimate), estimate_inputs, estimate_outputs, api_visibility="private",
                  **model_events
                  ).success(error_to_gradio(run_dataset_preset), [*run_inputs, feather, preset], run_outputs,
                            api_name="run_dataset_preset", **model_events)
    run_json.change(lambda info: pd.DataFrame(run_table_rows(info), columns=RUN_TABLE_COLUMNS), run_json, run_table,
                    api_visibility="private", queue=False)
    cancel_btn.click(cancel_run, None, run_msg, api_name="cancel_run", queue=False)
    demo.load(runs.uploads_table, None, uploads_outputs, api_visibility="private")
