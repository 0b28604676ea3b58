"""The map in the Curate tab (above the gallery): every augmentation the filter matches as a point of the embedding
map, coloured by class, prompt, status or a score; a box dragged over it narrows the gallery to exactly its points,
and the tab's bulk buttons ("Approve / Reject all matching…", counted, confirmed, undoable) then act on them.
Named endpoints: /map (colour), /map_box (x0, y0, x1, y1), /clear_map_box.

Gradio's ScatterPlot brushes an x range only (its ``.select`` gives ``(min_x, max_x)``), so the box is drawn by a
small script (:data:`BOX_JS`, installed on load): a drag over the plot draws a rectangle, reads both ranges from
the plot's own axis ticks, and presses *Show the box* with them; the four numbers can be typed as well.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import gradio as gr
import pandas as pd

from ..studio import curate_map as maps
from ..studio.state import Studio
from .common import show_errors

__all__ = ["BOX_JS", "build_map"]

# Installed once on load. A drag (over 4 px each way) over #curate-map's plot draws #map-box-overlay and presses
# #map-apply; the Apply event's js takes window.dmMapBox (the dragged box) instead of the typed numbers. Pixels
# become map coordinates through the ticks of the plot's own axes (two ticks per axis fix the linear scale).
BOX_JS = r"""
() => {
  if (window.dmMapInstalled) return;
  window.dmMapInstalled = true;
  const style = document.createElement("style");
  style.textContent = `#curate-map {position: relative; user-select: none;}
    #map-box-overlay {position: absolute; pointer-events: none; border: 2px dashed #2563eb;
      background: rgba(37, 99, 235, 0.12); display: none; z-index: 5;}`;
  document.head.appendChild(style);
  const num = (s) => parseFloat(String(s).replace(/\u2212/g, "-").replace(/,/g, ""));
  const plot = () => document.querySelector("#curate-map");
  function scale(which) {  // [pixel -> value, value -> pixel] of the X or Y axis, from its ticks, or null
    const svg = plot() && plot().querySelector("svg");
    const axis = svg && Array.from(svg.querySelectorAll("g.role-axis"))
      .find((g) => (g.getAttribute("aria-label") || "").startsWith(which + "-axis"));
    if (!axis) return null;
    const ticks = axis.querySelectorAll(".role-axis-tick line"), labels = axis.querySelectorAll(".role-axis-label text");
    const pts = [];
    for (let i = 0; i < Math.min(ticks.length, labels.length); i++) {
      const r = ticks[i].getBoundingClientRect(), v = num(labels[i].textContent);
      if (Number.isFinite(v)) pts.push([which === "X" ? r.left + r.width / 2 : r.top + r.height / 2, v]);
    }
    if (pts.length < 2) return null;
    const [a, b] = [pts[0], pts[pts.length - 1]], k = (b[1] - a[1]) / (b[0] - a[0]);
    return [(p) => a[1] + (p - a[0]) * k, (v) => a[0] + (v - a[1]) / k];
  }
  function overlay() {
    let box = document.getElementById("map-box-overlay");
    if (!box && plot()) {
      box = document.createElement("div");
      box.id = "map-box-overlay";
      plot().appendChild(box);
    }
    return box;
  }
  function place(left, top, right, bottom) {  // client pixels
    const box = overlay(), at = plot().getBoundingClientRect();
    Object.assign(box.style, {left: (Math.min(left, right) - at.left) + "px", top: (Math.min(top, bottom) - at.top) + "px",
      width: Math.abs(right - left) + "px", height: Math.abs(bottom - top) + "px", display: "block"});
  }
  window.dmMapClear = () => { const b = document.getElementById("map-box-overlay"); if (b) b.remove(); };
  window.dmMapDraw = (x0, y0, x1, y1) => {  // map coordinates -> the rectangle over the plot
    const sx = scale("X"), sy = scale("Y");
    if (!sx || !sy || ![x0, y0, x1, y1].every(Number.isFinite)) return window.dmMapClear();
    place(sx[1](x0), sy[1](y0), sx[1](x1), sy[1](y1));
  };
  let start = null;
  document.addEventListener("mousedown", (e) => {
    const svg = plot() && plot().querySelector("svg");
    if (e.button !== 0 || !svg || !svg.contains(e.target)) return;
    e.preventDefault();
    start = [e.clientX, e.clientY];
  }, true);
  document.addEventListener("mousemove", (e) => { if (start) place(start[0], start[1], e.clientX, e.clientY); }, true);
  document.addEventListener("mouseup", (e) => {
    if (!start) return;
    const [x, y] = start;
    start = null;
    const sx = scale("X"), sy = scale("Y");
    if (Math.abs(e.clientX - x) < 5 || Math.abs(e.clientY - y) < 5 || !sx || !sy) return window.dmMapClear();
    const r = (v) => Math.round(v * 1e4) / 1e4;
    window.dmMapBox = [r(sx[0](Math.min(x, e.clientX))), r(sy[0](Math.max(y, e.clientY))),
                       r(sx[0](Math.max(x, e.clientX))), r(sy[0](Math.min(y, e.clientY)))];
    document.querySelector("#map-apply").click();
  }, true);
}
"""
# the Apply event's js: the dragged box if there is one, else the typed numbers; the rectangle follows them
APPLY_JS = """(x0, y0, x1, y1, ...rest) => {
  const box = window.dmMapBox || [x0, y0, x1, y1];
  window.dmMapBox = null;
  if (window.dmMapDraw) window.dmMapDraw(...box.map(Number));
  return [...box, ...rest];
}"""
CLEAR_JS = "(...args) => { if (window.dmMapClear) window.dmMapClear(); return args; }"


def build_map(studio: Studio) -> SimpleNamespace:
    """Lay out the map (inside the Curate tab, where it is called). Gives what the tab wires: ``wire(...)``
    (its events; returns ``follow``, the arguments of the step after a new filter: the filter's points, and the
    box kept on the new query), ``draw(query, color)`` with ``color`` and ``outputs`` (redraw after a decision)."""
    ws = studio.workspace
    with gr.Row(elem_id="map-row"):
        with gr.Column(scale=3):
            m_plot = gr.ScatterPlot(x="x", y="y", color="class", tooltip=["id", "class", "prompt"], height=360,
                                    x_title="map x", y_title="map y", show_label=False, elem_id="curate-map")
        with gr.Column(scale=1, min_width=240):
            # every choice here (what API callers may send); a page shows those of its workspace (choices())
            m_color = gr.Dropdown([(words, key) for key, words in maps.COLORS.items()], value="class",
                                  label="Colour the map by", elem_id="map-color")
            m_md = gr.Markdown(elem_id="map-note")
            with gr.Row():
                m_x0 = gr.Number(label="box x from", min_width=80, elem_id="map-x0")
                m_x1 = gr.Number(label="x to", min_width=80, elem_id="map-x1")
            with gr.Row():
                m_y0 = gr.Number(label="box y from", min_width=80, elem_id="map-y0")
                m_y1 = gr.Number(label="y to", min_width=80, elem_id="map-y1")
            with gr.Row():
                m_apply = gr.Button("Show the box", size="sm", elem_id="map-apply")
                m_clear = gr.Button("Clear map selection", size="sm", elem_id="map-clear")
    m_box = gr.State(None)  # the box on the query (x0, y0, x1, y1), kept when the filter changes
    numbers = [m_x0, m_y0, m_x1, m_y1]

    # ---------------------------------------------------------------------------------------------- callbacks
    def draw(query, color="class"):
        """The points the filter matches, coloured (plot, the line under the colour)."""
        view = maps.map_view(ws, query, color or "class")
        frame = pd.DataFrame(view.rows, columns=view.columns)
        plot = gr.ScatterPlot(value=frame, color=view.color_column, color_title=view.color_column,
                              color_map=maps.STATUS_COLORS if view.color == "status" else None,
                              x_lim=view.x_lim, y_lim=view.y_lim, visible=bool(view.rows) or not view.note)
        return plot, view.describe()

    def choices():
        return gr.Dropdown(choices=maps.color_choices(ws))

    def follow_fn(narrowed: Callable, n_outputs: int) -> Callable:
        def follow(query, box, color):
            """After a new filter: its points on the map, and the box (if any) kept on the new query."""
            shown = narrowed(maps.with_box(query, box)) if box is not None else (gr.skip(),) * n_outputs
            return (*shown, *draw(maps.with_box(query, box), color))
        return follow

    def wire(st: SimpleNamespace, narrowed: Callable, curate_outputs: list, show_hist: dict, demo: gr.Blocks,
             refresh_btn: gr.Button) -> dict:
        """`narrowed(query)`: what a new query shows (the values of `curate_outputs`, from its first page)."""
        def apply_box(x0, y0, x1, y1, query, color):
            """Narrow the gallery to the box (a new query: first page, selection cleared), and say how many."""
            box = maps.box_of(x0, y0, x1, y1)
            query = maps.with_box(query, box)
            return (*narrowed(query), box, *draw(query, color)[1:], *(box[i] for i in (0, 1, 2, 3)))

        def clear_box(query, color):
            query = maps.with_box(query, None)
            return (*narrowed(query), None, *draw(query, color)[1:], *(None,) * 4)

        outputs = [*curate_outputs, m_box, m_md, *numbers]
        m_apply.click(show_errors(apply_box, len(curate_outputs) + 1, len(outputs)),
                      [*numbers, st.query, m_color], outputs, js=APPLY_JS, api_name="map_box"
                      ).then(**show_hist)
        m_clear.click(show_errors(clear_box, len(curate_outputs) + 1, len(outputs)), [st.query, m_color], outputs,
                      js=CLEAR_JS, api_name="clear_map_box").then(**show_hist)
        m_color.input(show_errors(draw, 1, 2), [st.query, m_color], [m_plot, m_md], api_name="map")
        refresh_btn.click(choices, None, m_color, api_visibility="private")
        demo.load(choices, None, m_color, api_visibility="private")
        demo.load(None, js=BOX_JS)
        follow_outputs = [*curate_outputs, m_plot, m_md]
        return dict(fn=show_errors(follow_fn(narrowed, len(curate_outputs)), len(follow_outputs) - 1,
                                   len(follow_outputs)),
                    inputs=[st.query, m_box, m_color], outputs=follow_outputs, api_visibility="private")

    return SimpleNamespace(wire=wire, draw=draw, color=m_color, outputs=[m_plot, m_md])
