"""The app assembled: the header and model status line, then the five tabs, each from its own module."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from ..studio.config import AppConfig
from ..studio.state import Studio
from .curate import build_curate
from .dataset import build_dataset
from .explore import build_explore
from .export import build_export
from .jobs import build_jobs
from .prompts import build_prompts

__all__ = ["build_app"]


def open_in_explore(viewed):
    """(Explore's result id, the tab to show, a message) for Curate's *Open in Explore*."""
    if viewed in (None, ""):
        raise gr.Error("View an augmentation first (click it in the gallery).")
    return f"ws-{int(viewed)}", gr.Tabs(selected="explore"), ""


def build_app(config: AppConfig) -> gr.Blocks:
    """The Blocks app (``demo.studio`` holds its state, for tests and benchmarks). Building it is fast: the model
    loads on first use."""
    # stage images inside Gradio's cache folder, so Gradio serves these files as they are instead of copying them
    studio = Studio(config, stage_root=Path(get_upload_folder()) / "diffusemix-stages")
    with gr.Blocks(title="DiffuseMix Studio", delete_cache=(3600, 6 * 3600)) as demo:
        gr.Markdown("# DiffuseMix Studio\nLabel-preserving augmentation (DiffuseMix, CVPR 2024): "
                    "**A = (1−λ)·(M⊙I + (1−M)⊙Î) + λ·F**")
        status_md = gr.Markdown(studio.model.status(), elem_id="model-status")
        with gr.Tabs() as tabs:
            explore = build_explore(studio, status_md)
            build_prompts(studio, demo, explore.prompt_dd)
            build_dataset(studio, demo)
            curate = build_curate(studio, demo)
            build_export(studio, demo)
            build_jobs(studio, demo)
        # Curate's "Open in Explore": the viewed item as 'ws-N' in Explore's result id, shown there
        curate.open_btn.click(open_in_explore, curate.viewed, [explore.result_id, tabs, curate.item_msg],
                              api_visibility="private", queue=False).success(**explore.show_result)
        demo.load(studio.model.status, None, status_md, api_visibility="private")
    demo.queue(max_size=64, default_concurrency_limit=2)
    demo.studio = studio
    return demo
