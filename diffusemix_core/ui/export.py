"""The Export tab: the augmentations of one status as one zip (ImageFolder + metadata.csv + manifest.sqlite), and
the past exports. Named endpoints: /export, /list_exports."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ..studio.exports import EXPORT_COLUMNS
from ..studio.state import Studio
from .common import show_errors

__all__ = ["build_export"]


def build_export(studio: Studio, demo: gr.Blocks) -> None:
    """Lay out and wire the tab (inside the Blocks)."""
    with gr.Tab("Export", id="export"):
        gr.Markdown("One zip holding one folder named after the export (`<when>-<status>-<id>/`): "
                    "`<label>/aug_<id>.png` (ImageFolder; `<label>/orig_<source>.png` with the originals), "
                    "`metadata.csv` (Hugging Face imagefolder) and `manifest.sqlite`. Unzip it and point "
                    "`ImageFolder` or `load_dataset(\"imagefolder\", data_dir=…)` at that folder.")
        with gr.Row():
            status = gr.Dropdown(["approved", "pending", "rejected", "all"], value="approved", label="Status")
            originals = gr.Checkbox(label="Include originals")
            export_btn = gr.Button("Export", variant="primary", elem_id="export")
        export_file = gr.File(label="Export zip", interactive=False, elem_id="export-file")
        export_msg = gr.Markdown(elem_id="export-msg")
        exports_table = gr.Dataframe(label="Past exports (newest first)", headers=list(EXPORT_COLUMNS.values()),
                                     interactive=False, wrap=True)

    def export(status="approved", include_originals=False):
        """Export the augmentations with this status as one zip (ImageFolder + metadata.csv + manifest.sqlite)."""
        zip_path, message = studio.exports.export(status, include_originals)
        return str(zip_path), message

    def list_exports():
        return pd.DataFrame(studio.exports.past(), columns=list(EXPORT_COLUMNS.values()))

    demo.load(list_exports, None, exports_table, api_name="list_exports")  # named before its private use
    export_btn.click(show_errors(export, 1, 2), [status, originals], [export_file, export_msg], api_name="export"
                     ).then(list_exports, None, exports_table, api_visibility="private")
