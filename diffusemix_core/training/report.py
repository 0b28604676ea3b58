"""What a training comparison writes: ``results.csv`` (one row per arm and epoch), ``curves.png`` (validation top-1
and training loss per epoch, one line per arm) and ``summary.md`` (the settings and each arm's final epoch with its
standard error, its best epoch and its gain over the baseline).

:class:`ResultsCsv` appends each row as it comes, so a long run's results are on disk epoch by epoch.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .settings import TrainSettings

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from .dataset import DiffuseMixDataset, ImageFiles

__all__ = ["RESULT_COLUMNS", "ResultsCsv", "TrainReport", "plot_curves", "summary_markdown"]

RESULT_COLUMNS = ("arm", "epoch", "loss", "val_loss", "top1", "top5", "train_images", "seconds")


@dataclass
class TrainReport:
    """What ``trainer.train_arms`` wrote: one row per (arm, epoch) and the three output files."""

    rows: list[dict]
    results_csv: Path
    curves_png: Path
    summary_md: Path
    export_dir: Path | None = None


class ResultsCsv:
    """``results.csv`` (:data:`RESULT_COLUMNS`), started empty and written one row at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(RESULT_COLUMNS)

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=RESULT_COLUMNS).writerow(row)


def plot_curves(rows: list[dict], path: Path) -> Path:
    """curves.png: validation top-1 and training loss per epoch, one line per arm (Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    acc_ax, loss_ax = fig.subplots(1, 2)
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        epochs = [r["epoch"] for r in mine]
        acc_ax.plot(epochs, [r["top1"] for r in mine], marker="o", markersize=3, label=arm)
        loss_ax.plot(epochs, [r["loss"] for r in mine], marker="o", markersize=3, label=arm)
    acc_ax.set(title="validation top-1", xlabel="epoch", ylabel="top-1 accuracy (%)")
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="loss")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path)
    return path


def summary_markdown(rows: list[dict], arms: Sequence[str], datasets: dict, originals: DiffuseMixDataset,
                     val: ImageFiles, workspace: Path, val_dir: Path, s: TrainSettings, device: torch.device) -> str:
    """summary.md: the settings, and the final epoch of each arm with its standard error and the best epoch."""
    n_val = len(val)
    final = {arm: [r for r in rows if r["arm"] == arm][-1] for arm in arms}
    base = final.get("baseline")
    lam = s.lam if isinstance(s.lam, (int, float)) else f"U{tuple(s.lam)}"
    weights = "ImageNet weights" if s.pretrained else "from scratch"
    top5 = len(originals.classes) > 5  # with 5 classes or fewer, top-5 is always 100%: not shown
    lines = [
        "# DiffuseMix training comparison",
        "",
        f"- workspace `{workspace}`: {len(originals)} source images, {len(originals.classes)} classes, "
        f"{originals.sources_with_generated} sources with {s.status} Î ({int(originals.generated_counts.sum())} Î)",
        f"- validation `{val_dir}`: {n_val} images",
        f"- model {s.model} ({weights}), {s.epochs} epochs, batch {s.batch_size}, SGD (Nesterov, momentum "
        f"{s.momentum}) lr {s.learning_rate():g} cosine to 0, weight decay {s.weight_decay:g}, seed {s.seed}, "
        f"{s.size}² input, device {device}",
        f"- every arm sees {len(originals)} images per epoch (the same optimizer steps); online: p={s.p:g}, "
        f"λ={lam}, " + (f"JSD on (weight {s.jsd_weight:g})" if s.jsd else "JSD off"),
        "",
        "| arm | train pool | top-1 (%) |" + (" top-5 (%) |" if top5 else "") + " val loss | best top-1 (%) (epoch) | "
        "Δ top-1 vs baseline | train time (s) |",
        "|---|---:|---:|" + ("---:|" if top5 else "") + "---:|---:|---:|---:|",
    ]
    for arm in arms:
        r = final[arm]
        best = max((x for x in rows if x["arm"] == arm), key=lambda x: (x["top1"], -x["epoch"]))
        se = 100.0 * math.sqrt(max(r["top1"] / 100 * (1 - r["top1"] / 100), 0.0) / n_val)
        delta = f"{r['top1'] - base['top1']:+.2f}" if base is not None and arm != "baseline" else "–"
        seconds = sum(x["seconds"] for x in rows if x["arm"] == arm)
        top5_cell = f" {r['top5']:.2f} |" if top5 else ""
        lines.append(f"| {arm} | {len(datasets[arm])} | {r['top1']:.2f} ± {se:.2f} |{top5_cell} "
                     f"{r['val_loss']:.4f} | {best['top1']:.2f} ({best['epoch']}) | {delta} | {seconds:.1f} |")
    lines += [
        "",
        f"Final epoch. ± is the binomial standard error of top-1 on {n_val} validation images; with one seed, "
        "differences within about twice it are noise (rerun with other --seed values to be sure). The train pool is "
        "what each epoch's images are drawn from (export: originals + exported augmentation files).",
        "",
    ]
    return "\n".join(lines)
