"""The pictures of a training comparison (matplotlib's Agg canvas, no pyplot state):

* ``curves.png``: validation top-1 and training loss per epoch, one line per arm (the mean over seeds);
* ``prompt_gains.png``: the gain of every per-prompt (and leave-one-out) arm over the baseline with its 95% interval;
* ``gains.png``: the class × prompt matrix of per-class gains over the baseline (a heat map, 0 white).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .stats import Gain

__all__ = ["plot_class_gains", "plot_curves", "plot_prompt_gains"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_curves(rows: list[dict], path: Path) -> Path:
    """curves.png: validation top-1 and training loss per epoch, one line per arm, averaged over the seeds."""
    fig = _figure(10, 4)
    acc_ax, loss_ax = fig.subplots(1, 2)
    for arm in dict.fromkeys(r["arm"] for r in rows):
        epochs = sorted({r["epoch"] for r in rows if r["arm"] == arm})
        by_epoch = [[r for r in rows if r["arm"] == arm and r["epoch"] == e] for e in epochs]
        acc_ax.plot(epochs, [sum(r["top1"] for r in rs) / len(rs) for rs in by_epoch], marker="o", markersize=3,
                    label=arm)
        loss_ax.plot(epochs, [sum(r["loss"] for r in rs) / len(rs) for rs in by_epoch], marker="o", markersize=3,
                     label=arm)
    seeds = len({r["seed"] for r in rows})
    mean = f" (mean of {seeds} seeds)" if seeds > 1 else ""
    acc_ax.set(title="validation top-1" + mean, xlabel="epoch", ylabel="top-1 accuracy (%)")
    loss_ax.set(title="training loss" + mean, xlabel="epoch", ylabel="loss")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.savefig(path)
    return path


def plot_prompt_gains(gains: dict[str, Gain], path: Path) -> Path:
    """prompt_gains.png: one horizontal bar per arm (its mean gain of final top-1 over the baseline, points), with
    its 95% interval as an error bar (none with one seed); green above the noise, red below, grey within it."""
    names = list(gains)
    fig = _figure(8, 1.2 + 0.4 * len(names))
    ax = fig.subplots()
    colours = {"better": "#2e8b57", "worse": "#c0392b", "noise": "#8c8c8c", "unknown": "#5b7db1"}
    for y, name in enumerate(names):
        g = gains[name]
        ax.barh(y, g.mean, color=colours[g.verdict])
        if g.known:
            ax.errorbar(g.mean, y, xerr=[[g.mean - g.low], [g.high - g.mean]], fmt="none", ecolor="black", capsize=4)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    n = max((g.n for g in gains.values()), default=1)
    ax.set(xlabel="gain of final top-1 over the baseline (points)",
           title="per-prompt gains" + (f", 95% interval over {n} seeds" if n > 1 else " (1 seed: no interval)"))
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path)
    return path


def plot_class_gains(matrix: list[list[float]], prompts: Sequence[str], classes: Sequence[str], path: Path) -> Path:
    """gains.png: rows are arms (prompts), columns classes, cells the mean per-class gain in points (annotated)."""
    fig = _figure(max(5.0, 1.6 + 0.9 * len(classes)), max(2.5, 1.2 + 0.45 * len(prompts)))
    ax = fig.subplots()
    limit = max([abs(v) for row in matrix for v in row] + [1.0])
    image = ax.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(prompts)), prompts)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:+.0f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(value) > 0.6 * limit else "black")
    fig.colorbar(image, ax=ax, label="top-1 gain (points)")
    ax.set_title("class × prompt gains (final epoch, mean over seeds)")
    fig.savefig(path)
    return path
