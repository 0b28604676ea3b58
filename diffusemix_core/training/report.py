"""What a training comparison writes: ``results.csv`` (one row per arm, seed and epoch), ``per_class.csv`` (one row
per arm, seed, epoch and class) and ``summary.md`` (the settings; each arm's final and best top-1 as mean ± sd over
the seeds; its gain over the baseline with a 95% interval paired by seed; which gains exceed the noise, in words;
per-class accuracy). The pictures are ``plots.py``, the statistics ``stats.py``.

:class:`ResultsCsv` appends each row as it comes, so a long run's results are on disk epoch by epoch.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .settings import TrainSettings
from .stats import Gain, mean_sd, paired_gain

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .arms import Arm

__all__ = ["CLASS_COLUMNS", "RESULT_COLUMNS", "ResultsCsv", "TrainReport", "arm_gains", "class_gain_matrix",
           "final_rows", "summary_markdown"]

RESULT_COLUMNS = ("arm", "seed", "epoch", "p", "loss", "val_loss", "top1", "top5", "train_images", "seconds")
CLASS_COLUMNS = ("arm", "seed", "epoch", "class", "correct", "images", "top1")


@dataclass
class TrainReport:
    """What ``trainer.train_arms`` wrote: one row per (arm, seed, epoch), the per-class rows and the files."""

    rows: list[dict]
    results_csv: Path
    curves_png: Path
    summary_md: Path
    export_dir: Path | None = None
    per_class_csv: Path | None = None
    class_rows: list[dict] = field(default_factory=list)
    gains: dict[str, Gain] = field(default_factory=dict)
    prompt_gains_png: Path | None = None
    gains_png: Path | None = None
    stored_gains: int = 0  # per-prompt gains stored in the workspace


class ResultsCsv:
    """A CSV file with `columns`, started empty and written one row at a time."""

    def __init__(self, path: Path, columns: Sequence[str] = RESULT_COLUMNS) -> None:
        self.path, self.columns = path, tuple(columns)
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(self.columns)

    def append(self, *rows: dict) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerows(rows)


# ------------------------------------------------------------------------------------------------ the numbers
def final_rows(rows: list[dict], arm: str) -> dict[int, dict]:
    """{seed: the arm's last epoch row of that seed}."""
    out: dict[int, dict] = {}
    for r in rows:
        if r["arm"] == arm and (r["seed"] not in out or r["epoch"] > out[r["seed"]]["epoch"]):
            out[r["seed"]] = r
    return out


def _best_by_seed(rows: list[dict], arm: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for r in rows:
        if r["arm"] == arm:
            out[r["seed"]] = max(out.get(r["seed"], float("-inf")), r["top1"])
    return out


def arm_gains(rows: list[dict], arms: Sequence[str], baseline: str = "baseline") -> dict[str, Gain]:
    """{arm: gain of final top-1 over `baseline`, paired by seed} for every other arm (empty without a baseline).
    Only seeds both finished are paired."""
    base = final_rows(rows, baseline)
    if not base:
        return {}
    gains = {}
    for arm in arms:
        mine = final_rows(rows, arm)
        seeds = sorted(set(mine) & set(base))
        if arm != baseline and seeds:
            gains[arm] = paired_gain([mine[s]["top1"] for s in seeds], [base[s]["top1"] for s in seeds])
    return gains


def class_gain_matrix(class_rows: list[dict], arms: Sequence[str], classes: Sequence[str],
                      baseline: str = "baseline") -> list[list[float]]:
    """[arm][class]: the mean over seeds of (the arm's final per-class top-1 − the baseline's), in points."""
    last = max((r["epoch"] for r in class_rows), default=0)
    final = {(r["arm"], r["seed"], r["class"]): r["top1"] for r in class_rows if r["epoch"] == last}
    seeds = sorted({r["seed"] for r in class_rows})
    matrix = []
    for arm in arms:
        row = []
        for c in classes:
            diffs = [final[(arm, s, c)] - final[(baseline, s, c)] for s in seeds
                     if (arm, s, c) in final and (baseline, s, c) in final]
            row.append(sum(diffs) / len(diffs) if diffs else 0.0)
        matrix.append(row)
    return matrix


def _mean_sd_text(values: Sequence[float]) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")


# ------------------------------------------------------------------------------------------------ the summary
def summary_markdown(rows: list[dict], class_rows: list[dict], arms: Sequence[Arm], pools: dict[str, int],
                     facts: dict, s: TrainSettings, seeds: Sequence[int]) -> str:
    """summary.md: the settings, one line per arm (final and best top-1 as mean ± sd over the seeds, the gain over
    the baseline with its 95% interval paired by seed), the verdicts in words and the per-class accuracy."""
    names = [a.name for a in arms]
    gains = arm_gains(rows, names)
    lam = s.lam if isinstance(s.lam, (int, float)) else f"U{tuple(s.lam)}"
    weights = "ImageNet weights" if s.pretrained else "from scratch"
    k = len(seeds)
    seed_text = f"seed {seeds[0]}" if k == 1 else f"{k} seeds ({seeds[0]}–{seeds[-1]}): weights, order and draws"
    top5 = facts['classes'] > 5  # with 5 classes or fewer, top-5 is always 100%: not shown
    lines = [
        "# DiffuseMix training comparison",
        "",
        f"- workspace `{facts['workspace']}`: {facts['sources']} source images, {facts['classes']} classes, "
        f"{facts['with_generated']} sources with {s.status} Î ({facts['generated']} Î)",
        f"- validation `{facts['val_dir']}`: {facts['val']} images",
        f"- model {s.model} ({weights}), {s.epochs} epochs, batch {s.batch_size}, SGD (Nesterov, momentum "
        f"{s.momentum}) lr {s.learning_rate():g} cosine to 0, weight decay {s.weight_decay:g}, {seed_text}, "
        f"{s.size}² input, device {facts['device']}",
        f"- every arm sees {facts['sources']} images per epoch (the same optimizer steps); online arms: p={s.p:g}, "
        f"λ={lam} unless the arm's name says otherwise, " + (f"JSD on (weight {s.jsd_weight:g})" if s.jsd
                                                              else "JSD off"),
        "",
        "| arm | train pool | final top-1 (%) | best top-1 (%) |" + (" final top-5 (%) |" if top5 else "")
        + " gain vs baseline (points, 95% interval) | train time (s) |",
        "|---|---:|---:|---:|" + ("---:|" if top5 else "") + "---:|---:|",
    ]
    for arm in names:
        final = final_rows(rows, arm)
        if not final:
            lines.append(f"| {arm} | {pools[arm]} | not run | | | | |")
            continue
        best = _best_by_seed(rows, arm)
        gain = gains[arm].text() if arm in gains else "–"
        seconds = sum(x["seconds"] for x in rows if x["arm"] == arm)
        top5_cell = f" {_mean_sd_text([r['top5'] for r in final.values()])} |" if top5 else ""
        lines.append(f"| {arm} | {pools[arm]} | {_mean_sd_text([r['top1'] for r in final.values()])} | "
                     f"{_mean_sd_text(list(best.values()))} |{top5_cell} {gain} | {seconds:.1f} |")
    lines += ["", _verdicts(gains, k), ""]
    if class_rows:
        lines += _per_class_table(class_rows, names)
    lines += [
        "Final epoch unless said otherwise. Values are mean ± sample standard deviation over the seeds; the gain is "
        "the mean of (arm − baseline) of the same seed, with a Student t 95% interval. The train pool is what each "
        "epoch's images are drawn from (export: originals + exported files; per-prompt arms: the originals, re-mixed "
        "from that prompt's Î only; `without:` arms: from every measured prompt but that one).",
        "",
    ]
    return "\n".join(lines)


def _verdicts(gains: dict[str, Gain], k: int) -> str:
    if not gains:
        return "No baseline arm: no gains to measure (add `baseline` to --arms)."
    if k < 2:
        return ("With one seed the interval is unknown: the gains above cannot be told from the run-to-run noise. "
                "Rerun with --repeats 3 (or more) for 95% intervals.")
    groups = {v: [f"{a} ({g.text()})" for a, g in gains.items() if g.verdict == v]
              for v in ("better", "worse", "noise")}
    parts = []
    if groups["better"]:
        parts.append("Better than the baseline beyond the noise (the 95% interval is above 0): "
                     + "; ".join(groups["better"]) + ".")
    if groups["worse"]:
        parts.append("Worse than the baseline beyond the noise (the interval is below 0): "
                     + "; ".join(groups["worse"]) + ".")
    if groups["noise"]:
        parts.append("Within the noise (the interval holds 0; no difference shown with "
                     f"{k} seeds): " + "; ".join(groups["noise"]) + ".")
    if len(gains) >= 5:
        parts.append(f"With {len(gains)} arms compared, about one interval in twenty excludes 0 by chance alone: "
                     "confirm a lone verdict with more seeds (--repeats) before acting on it.")
    return "\n\n".join(parts)


def _per_class_table(class_rows: list[dict], arms: Sequence[str]) -> list[str]:
    last = max(r["epoch"] for r in class_rows)
    classes = list(dict.fromkeys(r["class"] for r in class_rows))
    lines = ["## Per class (final top-1 %, mean over seeds)", "",
             "| arm | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for arm in arms:
        cells = []
        for c in classes:
            values = [r["top1"] for r in class_rows if r["arm"] == arm and r["class"] == c and r["epoch"] == last]
            cells.append(f"{sum(values) / len(values):.1f}" if values else "–")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines + [""]
