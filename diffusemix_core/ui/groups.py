"""Curate grouped by source (``curation/groups.py``): each source image's augmentations in a row, a decision per
group (approve all but the flagged ones), and an image slider of I against A (or Î) for the tile clicked.
Named endpoints: /groups, /approve_group, /compare_slider."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..curation import groups as source_groups, previews
from ..curation.filters import CurationQuery
from ..studio.state import Studio
from .common import error_to_gradio, show_errors

__all__ = ["GROUP_SLOTS", "build_groups"]

GROUP_SLOTS = 6  # sources shown per page of groups


def build_groups(studio: Studio, st: SimpleNamespace) -> SimpleNamespace:
    """Lay out the groups (inside the Curate tab; `st.query` is the tab's filter); ``wire()`` wires them."""
    ws = studio.workspace
    with gr.Accordion("Group by source (every prompt of one image in a row)", open=False, elem_id="groups-mode"):
        with gr.Row():
            show_btn = gr.Button("Show groups of this filter", variant="primary", scale=0, min_width=220,
                                 elem_id="groups-show")
            prev_btn = gr.Button("◀ Previous sources", size="sm", scale=0, min_width=150, elem_id="groups-prev")
            next_btn = gr.Button("Next sources ▶", size="sm", scale=0, min_width=150, elem_id="groups-next")
            groups_md = gr.Markdown(elem_id="groups-page")
        groups_msg = gr.Markdown(elem_id="groups-msg")
        with gr.Row():
            with gr.Column(scale=3):
                slots = []
                for k in range(GROUP_SLOTS):
                    with gr.Group(visible=False) as box:
                        with gr.Row(equal_height=True):
                            head = gr.Markdown(elem_id=f"group-head-{k}")
                            approve = gr.Button("Approve all but flagged", size="sm", scale=0, min_width=200,
                                                elem_id=f"group-approve-{k}")
                        gallery = gr.Gallery(show_label=False, columns=9, rows=1, height=170, allow_preview=False,
                                             object_fit="contain", elem_id=f"group-gallery-{k}",
                                             elem_classes=["group-gallery"])
                    slots.append(SimpleNamespace(box=box, head=head, approve=approve, gallery=gallery))
            with gr.Column(scale=2):
                versus = gr.Radio(["A", "Î"], value="A", label="Compare I with", elem_id="slider-versus")
                slider = gr.ImageSlider(label="I ↔ A (drag the handle)", type="filepath", format="png",
                                        interactive=False, height=360, elem_id="group-slider")
                slider_id = gr.Number(label="Augmentation # (click a tile)", precision=0, minimum=1,
                                      elem_id="slider-id")
        shown = gr.State([])  # the SourceGroup of each slot shown
        number = gr.State(0)

    # ---------------------------------------------------------------------------------------------- callbacks
    def groups(query: CurationQuery | None, page_number: int = 0):
        """A page of sources: per slot its header, gallery, visibility; the page line; the groups; the page."""
        page = source_groups.groups_page(ws, query or CurationQuery(), int(page_number or 0), GROUP_SLOTS)
        out = []
        for k in range(GROUP_SLOTS):
            group = page.groups[k] if k < len(page.groups) else None
            if group is None:
                out += [gr.Group(visible=False), "", []]
                continue
            items = list(zip(previews.served_copies(group.thumbnails, studio.previews), group.captions()))
            out += [gr.Group(visible=True), group.describe(), items]
        return (*out, page.describe(), page.groups, page.number)

    def turn(delta: int):
        return lambda query, n: groups(query, max(0, int(n or 0) + delta))

    def approve_group(k: int):
        def approve(query, n, shown_groups):
            if not shown_groups or k >= len(shown_groups):
                raise gr.Error("Show the groups first.")
            _, message = source_groups.approve_unflagged(ws, shown_groups[k])
            return (*groups(query, n), message)
        return approve

    def compare(aug_id, versus="A"):
        """I and A (or Î) of augmentation #N for the slider."""
        if aug_id in (None, ""):
            return gr.skip()
        record = studio.explore.workspace_record(int(aug_id))
        name = "final" if versus == "A" else "generated"
        original, other = studio.files.stage_paths(f"ws-{int(aug_id)}", record, ("original", name))
        return gr.ImageSlider(value=(original, other), label=f"I ↔ {versus} of #{int(aug_id)} (drag the handle)")

    def pick(k: int):
        def picked(shown_groups, evt: gr.SelectData):
            ids = shown_groups[k].ids if shown_groups and k < len(shown_groups) else []
            return ids[evt.index] if 0 <= evt.index < len(ids) else gr.skip()
        return picked

    def wire() -> None:
        slot_outputs = [c for s in slots for c in (s.box, s.head, s.gallery)]
        outputs = [*slot_outputs, groups_md, shown, number]
        n_out = len(outputs)
        show_btn.click(show_errors(lambda q: groups(q, 0), n_out - 3, n_out), st.query, outputs, api_name="groups")
        for button, delta in ((prev_btn, -1), (next_btn, 1)):
            button.click(show_errors(turn(delta), n_out - 3, n_out), [st.query, number], outputs,
                         api_visibility="private")
        for k, s in enumerate(slots):
            named = dict(api_name="approve_group") if k == 0 else dict(api_visibility="private")
            s.approve.click(show_errors(approve_group(k), n_out, n_out + 1), [st.query, number, shown],
                            [*outputs, groups_msg], concurrency_limit=4, **named)
            s.gallery.select(pick(k), shown, slider_id, api_visibility="private", queue=False
                             ).then(error_to_gradio(compare), [slider_id, versus], slider, api_visibility="private")
        gr.on([slider_id.submit, versus.change], error_to_gradio(compare), [slider_id, versus], slider,
              api_name="compare_slider")

    return SimpleNamespace(wire=wire)
