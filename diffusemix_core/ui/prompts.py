"""The Prompt library tab: edit, import and download the workspace's prompts, each shown with its measured gain
and label consistency; disable the harmful ones after a confirm step; measure prompts by training (a background
run with progress, cancellable); the per-prompt report beside them. Named endpoints: /save_prompts, /get_prompts,
/reset_prompts, /import_prompts, /download_prompts, /prompt_report, /harmful_prompts, /disable_harmful,
/measure_prompts, /cancel_measure."""

from __future__ import annotations

from typing import Callable

import gradio as gr
import pandas as pd

from ..curation import filters as query_filters, report_view as report_views
from ..engine.prompts import PromptLibrary
from ..errors import DiffuseMixError
from ..studio.explore import RANDOM
from ..studio.measure import MEASURE_MODELS
from ..studio.prompts import TABLE_HEADERS
from ..studio.state import Studio
from .common import error_to_gradio, scrub_paths, show_errors

__all__ = ["build_prompts"]


def build_prompts(studio: Studio, demo: gr.Blocks, prompt_dd: gr.Dropdown) -> None:
    """Lay out and wire the tab (inside the Blocks); saving also updates Explore's prompt dropdown."""
    editor = studio.prompts
    with gr.Tab("Prompt library", id="prompts") as prompts_tab:
        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown("Edit prompts in the table (tick *enabled*), then **Save**; **Add** and **Delete** save the table "
                            "at once. Used by every later run.", elem_id="prompts-hint")
                table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str", "bool", "str", "str"], interactive=True,
                                     static_columns=[2, 3], label="Prompts", elem_id="prompt-table")
                template = gr.Textbox(label="Template (exactly one {prompt})")
                with gr.Row():
                    save_p = gr.Button("Save", variant="primary", elem_id="save-prompts")
                    reset_p = gr.Button("Reset to the paper's nine")
                with gr.Row():
                    new_prompt = gr.Textbox(placeholder="new prompt, e.g. foggy morning", show_label=False, scale=2)
                    add_p = gr.Button("Add")
                    del_p = gr.Button("Delete selected row")
                with gr.Row():
                    harmful_b = gr.Button("Disable harmful prompts", size="sm", elem_id="disable-harmful")
                    confirm_b = gr.Button("Yes, disable them", variant="stop", size="sm", visible=False,
                                          elem_id="confirm-disable")
                    keep_b = gr.Button("Keep them", size="sm", visible=False, elem_id="keep-prompts")
                prompt_msg = gr.Markdown(elem_id="prompt-msg")  # next to the buttons that cause it
                harmful_list = gr.State([])
                with gr.Accordion("Import or download the library (JSON or TOML, the prompts/ format)", open=False):
                    with gr.Row():
                        import_f = gr.File(label="Import JSON/TOML", file_types=[".json", ".toml"], height=140)
                        with gr.Column():
                            fmt = gr.Radio(["JSON", "TOML"], value="JSON", label="Download format")
                            download_p = gr.Button("Download library")
                            download_f = gr.File(label="Library file", interactive=False, height=100)
            with gr.Column(scale=1):
                gr.Markdown("### Which prompts work on your data\nPer prompt, from the workspace's scores "
                            "(`report` on the command line): disable the prompts that lose the class.")
                with gr.Row():
                    r_metric = gr.Dropdown([(words, key) for key, words in report_views.REPORT_METRICS.items()],
                                           value="mean_label_prob", label="Plot", elem_id="report-metric")
                    r_label = gr.Dropdown(["all"], value="all", label="Class (plot)", elem_id="report-label")
                with gr.Row():
                    r_by_class = gr.Checkbox(label="Table per prompt and class", elem_id="report-by-class")
                    r_refresh = gr.Button("Refresh report", size="sm")
                r_note = gr.Markdown(elem_id="report-note")
                r_plot = gr.BarPlot(x="prompt", y="value", sort="y", y_lim=[0, 1], x_label_angle=-30, height=320,
                                    show_label=False, elem_id="report-plot")
        r_table = gr.Dataframe(label="Prompt report", interactive=False, elem_id="report-table")
        selected_row = gr.State(None)
        with gr.Accordion("Measure prompts by training", open=False, elem_id="measure-prompts"):
            gr.Markdown("Trains a baseline and one model per enabled prompt (the originals re-mixed from that "
                        "prompt's Î only) on several seeds, and measures each prompt's gain in validation top-1 with "
                        "its 95% interval. The gains are stored and shown in the table above. A validation set: "
                        "`upload:<id>` from the Dataset tab, or a folder where allowed.")
            with gr.Row():
                m_val = gr.Textbox(label="Validation set (class folders)", placeholder="upload:<id> or a folder",
                                   scale=2, elem_id="measure-val")
                m_model = gr.Dropdown(list(MEASURE_MODELS), value="resnet-tiny", label="Model")
                m_epochs = gr.Number(5, precision=0, minimum=1, label="Epochs")
                m_repeats = gr.Number(3, precision=0, minimum=1, label="Seeds")
                m_size = gr.Number(64, precision=0, minimum=8, label="Size (px)")
            with gr.Row():
                m_start = gr.Button("Start", variant="primary", elem_id="measure-start")
                m_cancel = gr.Button("Cancel", variant="stop", elem_id="measure-cancel")
            m_summary = gr.Markdown(elem_id="measure-summary")
            with gr.Row():
                m_bars = gr.Image(label="Per-prompt gains", type="filepath", interactive=False, format="png")
                m_heat = gr.Image(label="Class × prompt gains", type="filepath", interactive=False, format="png")

    # ---------------------------------------------------------------------------------------------- callbacks
    def shown(library: PromptLibrary, message: str) -> tuple:
        return (editor.table(library), library.template, message,
                gr.Dropdown(choices=[RANDOM] + library.enabled(), value=RANDOM))

    def saving(action: Callable, failed: str) -> Callable:
        """Store what `action` gives and show it; a refusal keeps the table as it is and says why."""
        def save(*args):
            try:
                return shown(*action(*args))
            except DiffuseMixError as exc:
                reason = scrub_paths(str(exc))
                gr.Warning(reason)
                return gr.skip(), gr.skip(), f"❌ {failed}: {reason}", gr.skip()
        return save

    def get_prompts():
        library = editor.library()
        return editor.table(library), library.template, gr.Dropdown(choices=[RANDOM] + library.enabled(),
                                                                         value=RANDOM)

    def save_prompts(table, template):
        """Store the edited library in the workspace; bad entries are refused with the reason."""
        return saving(editor.save, "Not saved")(table, template)

    def import_prompts(path):
        """Replace the library with a .json or .toml file's (validated first)."""
        return saving(editor.import_file, "Not imported")(path)

    def download_prompts(fmt):
        """The stored library as a JSON or TOML file."""
        return str(editor.download(fmt))

    def prompt_report(by_class=False, metric="mean_label_prob", label="all"):
        """The prompt report as a table and a bar plot of one metric per prompt (all classes or one)."""
        view = report_views.report_view(studio.workspace, by_class=bool(by_class), metric=metric, label=label)
        title = report_views.REPORT_METRICS[metric] + ("" if label in (None, "", "all") else f" · class {label}")
        title += " · untrained scorer" if view.untrained else ""
        # float values even when there are none: a first empty answer must not make the axis categorical
        bars = pd.DataFrame(view.bars, columns=["prompt", "value", "label"]).astype({"value": "float64"})
        plot = gr.BarPlot(value=bars, title=title,
                          y_title=report_views.REPORT_METRICS[metric])
        labels, _ = query_filters.filter_choices(studio.workspace)
        return (pd.DataFrame(view.rows, columns=view.headers), plot, view.note, gr.Dropdown(choices=["all", *labels]))

    def harmful_prompts():
        """The prompts measured harmful and the question; the confirm buttons show only when there are some."""
        prompts, text = editor.harmful()
        return prompts, text, gr.Button(visible=bool(prompts)), gr.Button(visible=bool(prompts))

    def disable_harmful(prompts):
        """Disable the prompts the user confirmed (those still harmful)."""
        library, message = editor.disable(prompts)
        return (*shown(library, message), gr.Button(visible=False), gr.Button(visible=False))

    def measure_prompts(val_dir, model="resnet-tiny", epochs=5, repeats=3, size=64, request: gr.Request = None,
                        progress=gr.Progress()):
        """Train a baseline and one arm per prompt; (summary, bar chart, heat map); the table then shows the gains."""
        return studio.prompt_study.run(val_dir, model=model, epochs=int(epochs), repeats=int(repeats),
                                       size=int(size), session=getattr(request, "session_hash", None),
                                       progress=progress)

    def cancel_measure(request: gr.Request):
        return studio.prompt_study.cancel(getattr(request, "session_hash", None))

    def row_of(evt: gr.SelectData) -> int | None:
        return int(evt.index[0]) if isinstance(evt.index, (list, tuple)) else int(evt.index)

    # ---------------------------------------------------------------------------------------------- wiring
    outputs = [table, template, prompt_msg, prompt_dd]
    save_p.click(error_to_gradio(save_prompts), [table, template], outputs, api_name="save_prompts")
    add_p.click(saving(editor.add, "Not added"), [table, template, new_prompt], outputs, api_visibility="private"
                ).then(lambda: "", None, new_prompt, api_visibility="private")
    table.select(row_of, None, selected_row, api_visibility="private")
    del_p.click(saving(editor.delete, "Not deleted"), [table, template, selected_row], outputs,
                api_visibility="private")
    reset_p.click(saving(editor.reset, "Not reset"), None, outputs, api_name="reset_prompts")
    import_f.upload(import_prompts, import_f, outputs, api_name="import_prompts")
    download_p.click(error_to_gradio(download_prompts), fmt, download_f, api_name="download_prompts")
    report_inputs, report_outputs = [r_by_class, r_metric, r_label], [r_table, r_plot, r_note, r_label]
    gr.on([r_refresh.click, r_by_class.change, r_metric.change, r_label.change, prompts_tab.select],
          show_errors(prompt_report, 2, 4), report_inputs, report_outputs, api_name="prompt_report",
          trigger_mode="always_last")
    harmful_b.click(error_to_gradio(harmful_prompts), None, [harmful_list, prompt_msg, confirm_b, keep_b],
                    api_name="harmful_prompts")
    confirm_b.click(error_to_gradio(disable_harmful), harmful_list, outputs + [confirm_b, keep_b],
                    api_name="disable_harmful")
    keep_b.click(lambda: ("Nothing changed.", gr.Button(visible=False), gr.Button(visible=False)), None,
                 [prompt_msg, confirm_b, keep_b], api_visibility="private")
    m_start.click(error_to_gradio(measure_prompts), [m_val, m_model, m_epochs, m_repeats, m_size],
                  [m_summary, m_bars, m_heat], api_name="measure_prompts", concurrency_limit=1
                  ).then(lambda: get_prompts(), None, [table, template, prompt_dd], api_visibility="private")
    m_cancel.click(cancel_measure, None, m_summary, api_name="cancel_measure", queue=False)
    demo.load(get_prompts, None, [table, template, prompt_dd], api_name="get_prompts")
    demo.load(show_errors(prompt_report, 2, 4), report_inputs, report_outputs, api_visibility="private")
