"""The lower part of the Curate tab: decisions by rule over what the filter shows. A score's distribution and a
threshold (reject the items past it), and the automatic review (the rules of ``review --auto``), each counted first
and made only when confirmed. Named endpoints: /threshold, /plan_threshold, /confirm_threshold,
/auto_review_dry_run, /auto_review_apply."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from ..curation import (
    decision_plans,
    filters as query_filters,
    histogram as histograms,
    queries as score_queries,
    selection as selections,
)
from ..studio.state import Studio
from .common import show_errors

__all__ = ["ask", "build_rules", "cancel", "confirm"]


def ask(plan) -> tuple:
    """(plan, question, confirm row, message) of a counted decision; nothing to confirm when it is empty."""
    if not plan.count:
        left_out = f" ({plan.left_out_text()})" if plan.left_out else ""
        return None, "", gr.Row(visible=False), f"Nothing to change: no augmentation {plan.what}{left_out}."
    return plan, plan.question(), gr.Row(visible=True), ""


def confirm(studio: Studio):
    def make(plan):
        """Make the counted decision: the message stays until the next action; the selection is cleared."""
        if plan is None:
            raise gr.Error("Nothing to confirm: choose an action first.")
        return plan.outcome(plan.apply(studio.workspace)), None, gr.Row(visible=False), selections.Selection()
    return make


def cancel():
    return "Cancelled: nothing changed.", None, gr.Row(visible=False)


def build_rules(studio: Studio, st: SimpleNamespace) -> SimpleNamespace:
    """Lay out the threshold and the automatic review (inside the Curate tab); `st` holds the tab's states.

    Gives what the tab wires: ``wire_named()`` (the /threshold event, before any private one of the same function),
    ``wire(again)`` (the rest; `again` shows the page again after a decision), ``show_hist`` (an event's arguments
    that redraw the distribution), ``dropped()`` and ``dropped_outputs`` (a new filter drops the counted decisions).
    """
    ws = studio.workspace
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Distribution of a score, and a threshold")
            with gr.Row():
                h_score = gr.Dropdown([(spec.title, key) for key, spec in histograms.HISTOGRAM_SCORES.items()], value="label_prob",
                                      label="Score", elem_id="h-score")
                h_threshold = gr.Slider(0, 1, value=0.2, step=0.01, label="Threshold", elem_id="h-threshold")
            h_plot = gr.BarPlot(x="bin", y="count", color="side", x_title="label prob of A", y_title="items",
                                color_map={"kept": "#94a3b8", "rejected": "#dc2626"}, x_label_angle=-45, height=260,
                                show_label=False, elem_id="h-plot")
            h_md = gr.Markdown(elem_id="h-count")
            h_reject = gr.Button("Reject the shown past the threshold…", variant="stop", elem_id="h-reject")
            with gr.Row(visible=False, elem_id="h-confirm") as h_row:
                h_q = gr.Markdown(elem_id="h-question")
                h_yes = gr.Button("Confirm", variant="primary", scale=0, min_width=110, elem_id="h-yes")
                h_no = gr.Button("Cancel", scale=0, min_width=90, elem_id="h-no")
            h_msg = gr.Markdown(elem_id="h-msg")
        with gr.Column():
            gr.Markdown("### Auto review (the rules of `review --auto`)\nOnly *pending* augmentations of the label "
                        "and prompt filtered above are judged; what the ticked rules reject is recorded as one "
                        "decision of origin `auto`.")
            with gr.Row(equal_height=True):
                a_use_p = gr.Checkbox(value=True, label="reject label prob of A below", elem_id="auto-use-p")
                a_min_p = gr.Number(value=0.2, minimum=0, maximum=1, step=0.01, show_label=False, elem_id="auto-min-p")
            with gr.Row(equal_height=True):
                a_use_d = gr.Checkbox(label="reject drift above", elem_id="auto-use-drift")
                a_max_d = gr.Number(value=0.9, minimum=0, maximum=1, step=0.01, show_label=False,
                                    elem_id="auto-max-drift")
            a_flagged = gr.Checkbox(label="reject flagged (a quality flag on A or Î)", elem_id="auto-flagged")
            a_dry = gr.Button("Dry run: count", elem_id="auto-dry-run")
            a_md = gr.Markdown(elem_id="auto-msg")
            a_table = gr.Dataframe(headers=["by", "name", "would reject"], interactive=False, max_height=260,
                                   elem_id="auto-table")
            with gr.Row(visible=False, elem_id="auto-confirm") as a_row:
                a_yes = gr.Button("Apply: reject these", variant="stop", elem_id="auto-apply")
                a_no = gr.Button("Cancel", elem_id="auto-cancel")
    h_st = gr.State(None)  # a counted threshold decision (decision_plans.DecisionPlan)
    auto_st = gr.State(None)  # a dry run's score_queries.AutoPlan

    # ---------------------------------------------------------------------------------------------- callbacks
    def threshold(query, score: str, threshold):
        """The distribution of a score over what the filter shows, and how many are past the threshold."""
        hist = histograms.histogram(ws, query or query_filters.CurationQuery(), score, threshold=float(threshold))
        plot = gr.BarPlot(value=pd.DataFrame(hist.rows(), columns=["bin", "count", "side"]),
                          x_title=histograms.HISTOGRAM_SCORES[score].title)
        return plot, hist.describe(), gr.Button(hist.action(), interactive=hist.past_count > 0)

    def plan_threshold(query, score: str, threshold):
        """Count the items past the threshold and ask to confirm rejecting them."""
        return ask(decision_plans.plan_threshold(ws, query or query_filters.CurationQuery(), score, float(threshold)))

    def auto_dry_run(query, use_min_label_prob, min_label_prob, use_max_drift, max_drift, reject_flagged):
        """What the ticked review --auto rules would reject among the pending items of the label and prompt
        filtered; nothing changes until Apply."""
        query = query or query_filters.CurationQuery()
        rules = score_queries.AutoRules(min_label_prob=float(min_label_prob) if use_min_label_prob else None,
                                        max_drift=float(max_drift) if use_max_drift else None,
                                        reject_flagged=bool(reject_flagged))
        plan = score_queries.auto_review_plan(ws, rules, label=query.label, prompt=query.prompt)
        text, rows = score_queries.auto_review_rows(plan)
        return (text, pd.DataFrame(rows, columns=["by", "name", "would reject"]), plan if plan.reject else None,
                gr.Row(visible=bool(plan.reject)))

    def auto_apply(plan):
        """Reject what the dry run counted, as one decision of origin 'auto' (Undo reverts it)."""
        if plan is None:
            raise gr.Error("Run the dry run first.")
        decision = score_queries.apply_auto_review(ws, plan)
        changed = 0 if decision is None else decision.changed
        return (f"✅ Auto review rejected {changed:,} augmentation(s) (origin 'auto'; the Undo button reverts it).",
                None, gr.Row(visible=False), selections.Selection())

    # ---------------------------------------------------------------------------------------------- wiring
    hist_inputs, hist_outputs = [st.query, h_score, h_threshold], [h_plot, h_md, h_reject]
    show_hist = dict(fn=show_errors(threshold, 1, 3), inputs=hist_inputs, outputs=hist_outputs,
                     api_visibility="private")

    def wire_named() -> None:
        gr.on([h_score.change, h_threshold.release], show_errors(threshold, 1, 3), hist_inputs, hist_outputs,
              api_name="threshold", trigger_mode="always_last")

    def wire(again: dict) -> None:
        h_reject.click(show_errors(plan_threshold, 3, 4), hist_inputs, [h_st, h_q, h_row, h_msg],
                       api_name="plan_threshold")
        h_yes.click(show_errors(confirm(studio), 0, 4), h_st, [h_msg, h_st, h_row, st.selection],
                    api_name="confirm_threshold", concurrency_limit=4).then(**again).then(**show_hist)
        h_no.click(cancel, None, [h_msg, h_st, h_row], api_visibility="private")
        a_dry.click(show_errors(auto_dry_run, 0, 4), [st.query, a_use_p, a_min_p, a_use_d, a_max_d, a_flagged],
                    [a_md, a_table, auto_st, a_row], api_name="auto_review_dry_run")
        a_yes.click(show_errors(auto_apply, 0, 4), auto_st, [a_md, auto_st, a_row, st.selection],
                    api_name="auto_review_apply", concurrency_limit=4).then(**again).then(**show_hist)
        a_no.click(cancel, None, [a_md, auto_st, a_row], api_visibility="private")

    return SimpleNamespace(wire_named=wire_named, wire=wire, show_hist=show_hist,
                           dropped=lambda: (None, gr.Row(visible=False), None, gr.Row(visible=False)),
                           dropped_outputs=[h_st, h_row, auto_st, a_row])
