"""The Jobs tab: score the workspace from the app (what ``score`` does on the command line) with progress, time
left and cancel, and the list of the jobs this app ran (items saved from Explore are scored in the background and
listed too). The scores appear in Curate (press Refresh there). Named endpoints: /score, /cancel_job, /jobs."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ..studio.jobs import JOB_COLUMNS
from ..studio.state import Studio
from .common import MODEL_QUEUE, error_to_gradio

__all__ = ["build_jobs"]


def build_jobs(studio: Studio, demo: gr.Blocks) -> None:
    """Lay out and wire the tab (inside the Blocks)."""
    jobs = studio.jobs
    with gr.Tab("Jobs", id="jobs"):
        gr.Markdown("Work that needs no terminal: **Score** gives every augmentation of the workspace its label "
                    "probability (CLIP) and quality flags, as `python -m diffusemix_core score` does; only what has "
                    "no score yet is scored, so running it again finishes a cancelled job. The scores appear in "
                    "Curate (press *Refresh* there).")
        with gr.Row():
            scorer = gr.Dropdown(["auto", "none"], value="auto", allow_custom_value=True, label="Scorer",
                                 info="auto: the CLIP for the workspace's model; none: quality flags only; or a "
                                      "model id", elem_id="job-scorer")
            score_btn = gr.Button("Score the workspace", variant="primary", elem_id="job-score")
            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="job-cancel")
        job_msg = gr.Markdown(elem_id="job-msg")
        table = gr.Dataframe(headers=JOB_COLUMNS, label="Jobs of this app (newest first)", interactive=False,
                             wrap=True, elem_id="job-list",
                             column_widths=["4%", "18%", "9%", "9%", "9%", "9%", "42%"])
        timer = gr.Timer(1.0, active=False)  # the list is refreshed while a job runs

    def score(scorer="auto", request: gr.Request = None, progress=gr.Progress()):
        """Score every Î and A of the workspace that has no score from this scorer yet; a sentence back."""
        return jobs.score(scorer, session=getattr(request, "session_hash", None), progress=progress)

    def cancel_job(request: gr.Request):
        return jobs.cancel(getattr(request, "session_hash", None))

    def list_jobs():
        return pd.DataFrame(jobs.table(), columns=JOB_COLUMNS), gr.Timer(active=jobs.running())

    score_btn.click(lambda: gr.Timer(active=True), None, timer, api_visibility="private", queue=False)
    score_btn.click(error_to_gradio(score), scorer, job_msg, api_name="score", concurrency_limit=1,
                    concurrency_id=MODEL_QUEUE).then(list_jobs, None, [table, timer], api_visibility="private")
    cancel_btn.click(cancel_job, None, job_msg, api_name="cancel_job", queue=False)
    timer.tick(list_jobs, None, [table, timer], api_visibility="private", show_progress="hidden")
    demo.load(list_jobs, None, [table, timer], api_name="jobs")
