"""The Curate tab: filter the workspace's augmentations, page through them, view one, select, decide in bulk
(counted first, then confirmed), undo. The score threshold and the automatic review sit below
(:mod:`.curate_rules`). Named endpoints: /curate, /view, /previous_page, /next_page, /toggle_selection,
/select_page, /clear_selection, /plan_{approve,reject}_{selected,matching}, /confirm_bulk, /approve_this,
/reject_this, /undo_review.

Viewing and selecting are separate acts: a click on a tile (or a table row) shows it; the selection changes only
through Select / Select page / Clear, is cleared by a new filter and after a bulk decision, and a bulk decision is
counted first and made only when confirmed (decision_plans.DecisionPlan).
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from ..curation import (
    decision_plans,
    detail as details,
    filters as query_filters,
    page as pages,
    previews,
    selection as selections,
)
from ..engine.diffusemix import STAGE_NAMES
from ..studio.explore import augmentation_id
from ..studio.state import Studio
from ..workspace.decisions import describe_undo
from ..workspace.manifest import STATUSES
from .common import STAGE_LABELS, cell_of_row, show_errors
from .curate_map import build_map
from .curate_rules import ask, build_rules, cancel, confirm
from .groups import build_groups
from .review import build_review

__all__ = ["build_curate"]

PER_PAGE = 40  # tiles per Curate page (8 rows of 5): only the page's rows are read
VERB = {"approved": "approve", "rejected": "reject"}


def build_curate(studio: Studio, demo: gr.Blocks) -> SimpleNamespace:
    """Lay out and wire the tab (inside the Blocks); gives the *Open in Explore* button and the viewed id (the
    app wires them to Explore)."""
    ws = studio.workspace
    with gr.Tab("Curate", id="curate"):
        st = SimpleNamespace(query=gr.State(None), page=gr.State(0), ids=gr.State([]),  # the filter and page shown
                             selection=gr.State(selections.Selection()), bulk=gr.State(None),  # a counted BulkPlan
                             viewed=gr.State(None))  # the id of the augmentation viewed
        with gr.Row(equal_height=True):
            f_label = gr.Dropdown(["all"], value="all", label="Label", allow_custom_value=True, elem_id="f-label")
            f_prompt = gr.Dropdown(["all"], value="all", label="Prompt", allow_custom_value=True, elem_id="f-prompt")
            f_status = gr.Dropdown(["all", *STATUSES], value="pending", label="Status", elem_id="f-status")
            f_flags = gr.Dropdown(list(query_filters.FLAG_FILTERS), value="all", label="Quality flags", elem_id="f-flags")
            f_sort = gr.Dropdown([(words, key) for key, (words, _) in query_filters.SORTS.items()], value="newest",
                                 label="Sort", elem_id="f-sort")
            refresh_btn = gr.Button("Refresh", scale=0, min_width=90)
        with gr.Row():
            f_ranges = [gr.Slider(0, 1, value=0, step=0.01, label="label prob of A ≥", elem_id="f-min-p"),
                        gr.Slider(0, 1, value=1, step=0.01, label="label prob of A ≤", elem_id="f-max-p"),
                        gr.Slider(0, 1, value=0, step=0.01, label="drift ≥", elem_id="f-min-drift"),
                        gr.Slider(0, 1, value=1, step=0.01, label="drift ≤", elem_id="f-max-drift")]
        cmap = build_map(studio)  # the embedding map; a box dragged over it narrows the query (curate_map.py)
        review = build_review(studio, st)  # one by one, with keys (review.py)
        grouped = build_groups(studio, st)  # by source, with the I ↔ A slider (groups.py)
        with gr.Row():
            with gr.Column(scale=3):
                page_md = gr.Markdown(elem_id="curate-page")
                gr.Markdown("Click an augmentation to view it; selecting is separate (*Select / unselect*, "
                            "*Select this page*). Selected ones have a green frame and ✓. Captions: id, status, "
                            "p = label prob of A (* untrained scorer), drift, ⚑ flags, label, prompt.",
                            elem_classes=["hint"])
                gallery = gr.Gallery(label="Augmentations", show_label=False, columns=5, height=640,
                                     allow_preview=False, object_fit="contain", elem_id="curate-gallery")
                with gr.Row():
                    prev_btn = gr.Button("◀ Previous page", size="sm", elem_id="prev-page")
                    next_btn = gr.Button("Next page ▶", size="sm", elem_id="next-page")
                    sel_page_btn = gr.Button("Select this page", size="sm", elem_id="select-page")
                    clear_btn = gr.Button("Clear selection", size="sm", elem_id="clear-selection")
                selection_md = gr.Markdown("Nothing selected.", elem_id="curate-selection")
                with gr.Row():
                    s_approve = gr.Button("Approve selected…", elem_id="approve-selected")
                    s_reject = gr.Button("Reject selected…", elem_id="reject-selected")
                    m_approve = gr.Button("Approve all matching…", elem_id="approve-matching")
                    m_reject = gr.Button("Reject all matching…", variant="stop", elem_id="reject-matching")
                    undo_btn = gr.Button("Undo last bulk decision", elem_id="undo-review")
                with gr.Row(visible=False, elem_id="bulk-confirm") as bulk_row:
                    bulk_q = gr.Markdown(elem_id="bulk-question")
                    bulk_yes = gr.Button("Confirm", variant="primary", scale=0, min_width=110, elem_id="bulk-yes")
                    bulk_no = gr.Button("Cancel", scale=0, min_width=90, elem_id="bulk-no")
                curate_msg = gr.Markdown(elem_id="curate-msg")
            with gr.Column(scale=2):
                detail_md = gr.Markdown("Click an augmentation to view it.", elem_id="curate-detail")
                with gr.Row():
                    view_id = gr.Number(label="View # (Enter)", precision=0, minimum=1, min_width=90,
                                        elem_id="view-id")
                    with gr.Column(scale=3):
                        with gr.Row():
                            c_select = gr.Button("Select / unselect", min_width=90, elem_id="toggle-select")
                            c_approve = gr.Button("Approve this", min_width=90, elem_id="approve-this")
                            c_reject = gr.Button("Reject this", min_width=90, elem_id="reject-this")
                            c_open = gr.Button("Open in Explore", min_width=90, elem_id="open-in-explore")
                        item_msg = gr.Markdown(elem_id="item-msg")
                c_stages = []
                for names in (STAGE_NAMES[:3], STAGE_NAMES[3:]):
                    with gr.Row():
                        c_stages += [gr.Image(label=STAGE_LABELS[n], format="png", interactive=False, height=130,
                                              min_width=80, elem_classes=["stage"], elem_id=f"curate-{n}",
                                              buttons=["fullscreen"]) for n in names]
                c_scores = gr.Dataframe(headers=details.DETAIL_COLUMNS, label="Scores", interactive=False,
                                        elem_id="curate-scores")
                c_history = gr.Dataframe(headers=details.HISTORY_COLUMNS, label="Decision history",
                                         interactive=False, elem_id="curate-history")
        rules = build_rules(studio, st)
        c_table = gr.Dataframe(headers=pages.TABLE_COLUMNS, label="This page as a table (click a row to view it)",
                               interactive=False, wrap=True, max_height=420, elem_id="curate-table")

    # ---------------------------------------------------------------------------------------------- callbacks
    def curate(label="all", prompt="all", status="pending", flags="all", sort="newest", min_label_prob=0.0,
               max_label_prob=1.0, min_drift=0.0, max_drift=1.0):
        """A new filter: its first page (gallery with scores in the captions, page line, table, selection line)."""
        return narrowed(query_filters.CurationQuery.from_form(label, prompt, status, flags, sort, min_label_prob,
                                                              max_label_prob, min_drift, max_drift))

    def narrowed(query):
        """A new query (a filter, the map's box): its first page; counted decisions of the old one are dropped."""
        hidden = gr.Row(visible=False)
        return (*show_page(query, 0, selections.Selection()), query, selections.Selection(), None, hidden,
                *rules.dropped())

    def show_page(query, number: int, selection) -> tuple:
        """(gallery, page line, table, selection line, page number, ids shown) of page `number` of `query`."""
        page = pages.page(ws, query or query_filters.CurationQuery(), int(number or 0), PER_PAGE)
        marks = [aug_id in selection for aug_id in page.ids]
        items = list(zip(previews.served_copies(page.thumbnails, studio.previews, marks), page.captions(selection)))
        return (items, page.describe(), pd.DataFrame(page.table(selection), columns=pages.TABLE_COLUMNS),
                selection.describe(), page.number, page.ids)

    def turn(delta: int):
        return lambda query, number, selection: show_page(query, max(0, int(number or 0) + delta),
                                                          selection or selections.Selection())

    def view(aug_id, selection=None):
        """One augmentation: its six stages, what it is made of, every score of A and Î, its decision history."""
        if aug_id in (None, ""):
            raise gr.Error("Click an augmentation in the gallery or the table first.")
        aug_id = augmentation_id(aug_id)
        detail = details.detail(ws, aug_id)
        stages = studio.explore.view(f"ws-{aug_id}", studio.explore.workspace_record(aug_id))[:6]
        mark = " **✓ selected**" if selection is not None and aug_id in selection else ""
        return (*stages, detail.summary() + mark, pd.DataFrame(detail.score_rows(), columns=details.DETAIL_COLUMNS),
                pd.DataFrame(detail.history_rows(), columns=details.HISTORY_COLUMNS), gr.skip(), aug_id)

    def change_selection(how: str):
        """Select / unselect the viewed item, select the page, or clear; the page is shown again with its marks."""
        def change(query, number, selection, ids, viewed):
            selection = selection or selections.Selection()
            if how == "toggle" and viewed in (None, ""):
                raise gr.Error("View an augmentation first (click it), then Select it.")
            selection = (selection.toggle(int(viewed)) if how == "toggle" else selection.add(*(ids or []))
                         if how == "page" else selection.clear())
            return (*show_page(query, number, selection), selection)
        return change

    def plan_bulk(status: str, which: str):
        """Count what a bulk decision would change and ask to confirm (plan, question, its row, message)."""
        def plan(query, selection):
            query = query or query_filters.CurationQuery()
            return ask(decision_plans.plan_selected(ws, query, selection or selections.Selection(), status)
                       if which == "selected" else decision_plans.plan_matching(ws, query, status))
        return plan

    def review_this(status: str):
        """Approve / reject the viewed augmentation (one item: no confirmation; Undo does not revert single items)."""
        def review(aug_id):
            if aug_id in (None, ""):
                raise gr.Error("View an augmentation first (click it in the gallery).")
            ws.review(status, ids=[augmentation_id(aug_id)], origin="app")
            return f"Marked #{int(aug_id)} {status}."
        return review

    def filter_choices():
        labels, prompts = query_filters.filter_choices(ws)
        return gr.Dropdown(choices=["all", *labels]), gr.Dropdown(choices=["all", *prompts])

    def pick_id(ids: list[int], evt: gr.SelectData):
        """The augmentation id of the clicked tile (viewing it changes nothing else)."""
        return ids[evt.index] if ids and 0 <= evt.index < len(ids) else gr.skip()

    def undo_review():
        """Revert the last bulk decision (items decided again since are left as they are)."""
        return describe_undo(ws.undo_last_review(origin="app"))

    # ---------------------------------------------------------------------------------------------- wiring
    filters = [f_label, f_prompt, f_status, f_flags, f_sort, *f_ranges]
    page_outputs = [gallery, page_md, c_table, selection_md, st.page, st.ids]
    curate_outputs = [*page_outputs, st.query, st.selection, st.bulk, bulk_row, *rules.dropped_outputs]
    same_page = [st.query, st.page, st.selection]
    view_outputs = [*c_stages, detail_md, c_scores, c_history, item_msg, st.viewed]
    again = dict(fn=show_errors(lambda q, n, s, color: (*turn(0)(q, n, s), *cmap.draw(q, color)), 1, 8),
                 inputs=[*same_page, cmap.color], outputs=[*page_outputs, *cmap.outputs], api_visibility="private")
    show_view = dict(fn=show_errors(view, 9, 11), inputs=[view_id, st.selection], outputs=view_outputs,
                     api_visibility="private")
    # after a bulk decision or an undo, the item viewed shows its new status, history and selection mark
    view_again = dict(fn=lambda viewed, selection: view(viewed, selection) if viewed not in (None, "") else
                      (gr.skip(),) * len(view_outputs), inputs=[st.viewed, st.selection], outputs=view_outputs,
                      api_visibility="private")
    # the named events first: a private event of the same function would take the name
    rules.wire_named()
    follow = cmap.wire(st, narrowed, curate_outputs, rules.show_hist, demo, refresh_btn)
    view_id.submit(show_errors(view, 9, 11), [view_id, st.selection], view_outputs, api_name="view")
    refresh = show_errors(curate, 1, len(curate_outputs))
    gr.on([refresh_btn.click, *(f.change for f in filters[:5]), *(f.release for f in f_ranges)], refresh, filters,
          curate_outputs, api_name="curate", trigger_mode="always_last").then(**follow).then(**rules.show_hist)
    refresh_btn.click(filter_choices, None, [f_label, f_prompt], api_visibility="private")
    for button, delta, name in ((prev_btn, -1, "previous_page"), (next_btn, 1, "next_page")):
        button.click(show_errors(turn(delta), 1, 6), same_page, page_outputs, api_name=name)
    gallery.select(pick_id, st.ids, view_id, api_visibility="private", queue=False).then(**show_view)
    # a page shown again keeps its ring on the item viewed, not on the position clicked before
    gallery.change(lambda ids, viewed: gr.Gallery(selected_index=ids.index(viewed) if ids and viewed in ids else None),
                   [st.ids, st.viewed], gallery, api_visibility="private", queue=False, show_progress="hidden")
    c_table.select(cell_of_row(1), None, view_id, api_visibility="private", queue=False).then(**show_view)
    for button, how, name in ((c_select, "toggle", "toggle_selection"), (sel_page_btn, "page", "select_page"),
                              (clear_btn, "clear", "clear_selection")):
        event = button.click(show_errors(change_selection(how), 1, 7), [*same_page, st.ids, st.viewed],
                             [*page_outputs, st.selection], api_name=name)
        if how == "toggle":
            event.then(**show_view)  # the detail says whether it is selected
    for button, status, which in ((s_approve, "approved", "selected"), (s_reject, "rejected", "selected"),
                                  (m_approve, "approved", "matching"), (m_reject, "rejected", "matching")):
        button.click(show_errors(plan_bulk(status, which), 3, 4), [st.query, st.selection],
                     [st.bulk, bulk_q, bulk_row, curate_msg], api_name=f"plan_{VERB[status]}_{which}")
    bulk_yes.click(show_errors(confirm(studio), 0, 4), st.bulk, [curate_msg, st.bulk, bulk_row, st.selection],
                   api_name="confirm_bulk", concurrency_limit=4).then(**again).then(**view_again
                                                                     ).then(**rules.show_hist)
    bulk_no.click(cancel, None, [curate_msg, st.bulk, bulk_row], api_visibility="private")
    for button, status in ((c_approve, "approved"), (c_reject, "rejected")):
        button.click(show_errors(review_this(status), 0, 1), st.viewed, item_msg, api_name=f"{VERB[status]}_this",
                     concurrency_limit=4).then(**again).then(**show_view)
    undo_btn.click(show_errors(undo_review, 0, 1), None, curate_msg, api_name="undo_review"
                   ).then(**again).then(**view_again).then(**rules.show_hist)
    rules.wire(again)
    demo.load(filter_choices, None, [f_label, f_prompt], api_visibility="private")
    demo.load(refresh, filters, curate_outputs, api_visibility="private").then(**follow).then(**rules.show_hist)
    review.wire(demo)
    grouped.wire()
    return SimpleNamespace(open_btn=c_open, viewed=st.viewed, item_msg=item_msg)
