"""Curate's review mode: one augmentation large (I, Î, A, its scores and flags, prompt and class), decided with a
key, then the next item of the Curate filter and sort (``studio/review.py``). Keys: a approve, r reject, space or →
skip, ← previous, z undo; they click the buttons below (a small script installed on page load), and are ignored
while typing in a field. Named endpoints: /review_start, /review_approve, /review_reject, /review_skip,
/review_previous, /review_undo."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..studio.review import KEYS, Reviewer, Walk
from ..studio.state import Studio
from .common import STAGE_LABELS, show_errors

__all__ = ["KEYS_JS", "build_review"]

# a key press clicks the review button of that key, unless a field has the focus or the review is closed
KEYS_JS = """
() => {
  if (window.__diffusemixReviewKeys) return;
  window.__diffusemixReviewKeys = true;
  const buttons = {a: "review-approve", r: "review-reject", " ": "review-skip", ArrowRight: "review-skip",
                   ArrowLeft: "review-previous", z: "review-undo"};
  document.addEventListener("keydown", (e) => {
    const id = buttons[e.key];
    const t = e.target;
    if (!id || e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
    const panel = document.getElementById("review-panel");
    const button = document.getElementById(id);
    if (!panel || !button || panel.offsetParent === null) return;
    e.preventDefault();
    button.click();
  });
}
"""


def build_review(studio: Studio, st: SimpleNamespace) -> SimpleNamespace:
    """Lay out the review (inside the Curate tab; `st.query` is the tab's filter); ``wire(demo)`` wires it."""
    reviewer = Reviewer(studio.workspace, studio.files, studio.explore.workspace_record)
    with gr.Accordion("Review one by one (keys)", open=False, elem_id="review-mode"):
        with gr.Column(elem_id="review-panel"):
            with gr.Row():
                gr.Markdown(f"Keys: {KEYS}. The items of the filter above, in its sort order; each decision is "
                            "one history entry.", elem_classes=["hint"])
                start = gr.Button("Start review of this filter", variant="primary", scale=0, min_width=220,
                                  elem_id="review-start")
            where = gr.Markdown(elem_id="review-where")
            with gr.Row():
                images = [gr.Image(label=STAGE_LABELS[name], format="png", interactive=False, height=320,
                                   elem_id=f"review-{name}", buttons=["fullscreen"])
                          for name in ("original", "generated", "final")]
            text = gr.Markdown(elem_id="review-item")
            with gr.Row():
                buttons = {key: gr.Button(words, size="sm", elem_id=f"review-{key}", variant=variant)
                           for key, words, variant in (("approve", "Approve (a)", "primary"),
                                                       ("reject", "Reject (r)", "stop"),
                                                       ("skip", "Skip (space, →)", "secondary"),
                                                       ("previous", "Previous (←)", "secondary"),
                                                       ("undo", "Undo (z)", "secondary"))}
            msg = gr.Markdown(elem_id="review-msg")
        walk = gr.State(Walk())

    # ---------------------------------------------------------------------------------------------- callbacks
    def show(w: Walk, message: str = "") -> tuple:
        """(walk, where, I, Î, A, item text, message) with the next items prepared ahead."""
        reviewer.prefetch(w.moved(1))
        if w.current is None:
            return w, w.where(), None, None, None, "", message
        item = reviewer.item(w.current)
        return (w, w.where(), *item.files, item.text, message)

    def begin(query):
        return show(reviewer.start(query))

    def decide(status: str):
        def act(w: Walk):
            return show(reviewer.decide(w or Walk(), status))
        return act

    def move(step: int):
        return lambda w: show((w or Walk()).moved(step))

    def undo(w: Walk):
        return show(*reviewer.undo(w or Walk()))

    def wire(demo: gr.Blocks) -> None:
        outputs = [walk, where, *images, text, msg]
        start.click(show_errors(begin, 6, 7), st.query, outputs, api_name="review_start")
        for key, fn in (("approve", decide("approved")), ("reject", decide("rejected")), ("skip", move(1)),
                        ("previous", move(-1)), ("undo", undo)):
            buttons[key].click(show_errors(fn, 6, 7), walk, outputs, api_name=f"review_{key}",
                               concurrency_limit=4, show_progress="hidden")
        demo.load(None, None, None, js=KEYS_JS)

    return SimpleNamespace(wire=wire)
