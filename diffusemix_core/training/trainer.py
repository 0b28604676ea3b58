"""The trainer behind ``python -m diffusemix_core train``: does DiffuseMix help this model on this data?

:func:`train_arms` trains one model per arm with the same seed, initial weights, schedule and validation set:

* ``baseline``: the originals only;
* ``export``: the originals plus the approved augmentations as exported files (what ``export`` writes);
* ``online``: :class:`~diffusemix_core.training.dataset.DiffuseMixDataset`, re-mixing cached Î every epoch
  (``--jsd`` adds AugMix's loss, ``losses.py``);

each with the same loop (SGD with Nesterov momentum, a cosine schedule, mixed precision on a GPU), and writes what
``report.py`` describes (results.csv, curves.png, summary.md). The settings are ``settings.py``, the models
``models.py``.
"""

from __future__ import annotations

import csv
import logging
import math
import threading
import time
import unicodedata
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..checks import check_int, format_duration
from ..engine.devices import resolve_device
from ..engine.fractals import FractalLibrary
from ..errors import BadArgumentError, DiffuseMixError, WorkspaceError
from .arms import BASE_ARMS, Arm, plan_arms
from .dataset import DiffuseMixDataset, ImageFiles, image_folder
from .losses import jsd_loss
from .models import build_model
from .plots import plot_class_gains, plot_curves, plot_prompt_gains
from .report import CLASS_COLUMNS, ResultsCsv, TrainReport, arm_gains, class_gain_matrix, summary_markdown
from .settings import TrainSettings

__all__ = ["ARMS", "TrainingCancelled", "match_classes", "pick_device", "train_arms"]

log = logging.getLogger(__name__)

ARMS: tuple[str, ...] = BASE_ARMS


# ---------------------------------------------------------------------------------------------- the trainer
def pick_device(device: str) -> torch.device:
    """``auto``: the first CUDA GPU when there is one, else the CPU; otherwise the device named."""
    if device == "auto":
        return torch.device(resolve_device(device))
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError):
        raise BadArgumentError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N.") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise BadArgumentError(f"device {device!r} asked for, but this machine has no CUDA GPU; use --device cpu.")
    return chosen


def match_classes(workspace_classes: Sequence[str], val_classes: Sequence[str], val_dir: Path) -> None:
    """BadArgumentError naming the difference when the validation classes are not the workspace's."""
    ours = {unicodedata.normalize("NFC", c) for c in workspace_classes}
    theirs = {unicodedata.normalize("NFC", c) for c in val_classes}
    if ours == theirs:
        return

    def names(values: set[str]) -> str:
        shown = sorted(values)[:5]
        more = f" and {len(values) - 5} more" if len(values) > 5 else ""
        return ", ".join(repr(v) for v in shown) + more

    parts = []
    if ours - theirs:
        parts.append(f"missing from it: {names(ours - theirs)}")
    if theirs - ours:
        parts.append(f"not in the workspace: {names(theirs - ours)}")
    raise BadArgumentError(
        f"validation folder '{val_dir}' has classes that differ from the workspace's ({'; '.join(parts)}); name its "
        "class folders exactly like the training set's."
    )


def train_arms(workspace: str | Path, val_dir: str | Path, out: str | Path, *,
               arms: Sequence[str] | Sequence[Arm] = BASE_ARMS, settings: TrainSettings = TrainSettings(),
               repeats: int = 1, overwrite: bool = False, progress: bool = True,
               fractals: FractalLibrary | None = None, record_gains: bool = True,
               on_epoch: Callable[[dict, int, int, float | None], None] | None = None,
               cancel: threading.Event | None = None) -> TrainReport:
    """Train one model per arm and seed (`repeats` seeds from ``settings.seed``) on the same schedule and validation
    set; write results.csv, per_class.csv, curves.png and summary.md into `out` (the export arm's files go to
    ``out/export``), and with per-prompt arms prompt_gains.png and gains.png, storing their gains in the workspace
    (`record_gains`).

    `arms` are names (baseline, export, online: the online arm with ``settings.p`` and ``settings.lam``) or
    :class:`~.arms.Arm` values from :func:`~.arms.plan_arms`. Every arm sees as many images per epoch as the
    workspace has sources, so every arm takes the same optimizer steps. Seed k changes the initial weights, the
    image order and every augmentation draw, the same in every arm, so arms are paired by seed. `on_epoch(row, done,
    total, seconds_left)` is called after every epoch; `cancel` (set from another thread) stops within a batch
    (:class:`TrainingCancelled`; the finished epochs stay in results.csv).
    """
    workspace, val_dir, out = Path(workspace), Path(val_dir), Path(out)
    s = settings
    s.check()
    plan = [a if isinstance(a, Arm) else None for a in arms]
    if None in plan or not plan:
        plan = plan_arms([str(a) for a in arms], ps=[s.p], lams=[s.lam])
    repeats = check_int("repeats", repeats, minimum=1)
    seeds = list(range(s.seed, s.seed + repeats))
    device = pick_device(s.device)
    _check_out(out, workspace, overwrite)

    fractals = fractals if fractals is not None else FractalLibrary.default()
    common = {"status": s.status, "size": s.size, "fractals": fractals}
    originals = DiffuseMixDataset(workspace, p=0.0, seed=s.seed, **common)
    classes = originals.classes
    val_classes, val_files = image_folder(val_dir)
    if not val_files:
        raise BadArgumentError(f"validation folder '{val_dir}' holds no images; the layout is DIR/<class>/<image>.")
    match_classes(classes, val_classes, val_dir)
    by_nfc = {unicodedata.normalize("NFC", c): i for i, c in enumerate(classes)}
    val = ImageFiles([(path, by_nfc[unicodedata.normalize("NFC", c)]) for path, c in val_files], size=s.size)
    if originals.sources_with_generated == 0 and any(a.kind != "baseline" for a in plan):
        raise WorkspaceError(
            f"workspace '{workspace}' has no {s.status} augmentations, so the export and online arms would be the "
            f"baseline; review first (`review --workspace {workspace} --approve ...`) or train --arms baseline."
        )
    build_model(s.model, classes, pretrained=s.pretrained)  # a missing model fails now, not after an arm

    out.mkdir(parents=True, exist_ok=True)
    export_dir, export_files = None, None
    if any(a.kind == "export" for a in plan):
        export_dir = out / "export"
        export_files = _export_files(workspace, export_dir, s.status, set(originals.source_ids.tolist()),
                                     originals.class_to_idx, overwrite=overwrite)

    def dataset_of(arm: Arm, seed: int) -> torch.utils.data.Dataset:
        if arm.kind == "baseline":
            return DiffuseMixDataset(workspace, p=0.0, seed=seed, **common)
        if arm.kind == "export":
            return torch.utils.data.ConcatDataset([DiffuseMixDataset(workspace, p=0.0, seed=seed, **common),
                                                   ImageFiles(export_files, size=s.size)])
        return DiffuseMixDataset(workspace, p=arm.p_at(1, s.epochs), lam=arm.lam, jsd=s.jsd, prompts=arm.prompts,
                                 seed=seed, **common)

    pools = {a.name: len(originals) + (len(export_files) if a.kind == "export" else 0) for a in plan}
    results = ResultsCsv(out / "results.csv")
    per_class = ResultsCsv(out / "per_class.csv", CLASS_COLUMNS)
    clock = Clock(len(plan) * len(seeds) * s.epochs, on_epoch)
    tqdm.write(clock.plan_text(len(plan), len(seeds), s.epochs, len(originals)))
    rows: list[dict] = []
    class_rows: list[dict] = []
    for arm in plan:
        for seed in seeds:
            for row, by_class in _train_one(arm, dataset_of(arm, seed), val, classes, len(originals), s, seed,
                                            device, progress, cancel):
                rows.append(row)
                class_rows.extend(by_class)
                results.append(row)
                per_class.append(*by_class)
                clock.tick(row)
    return _finish(out, rows, class_rows, plan, pools, classes, seeds, s, workspace, val_dir, originals, val, device,
                   export_dir, results.path, per_class.path, record_gains)


class TrainingCancelled(DiffuseMixError):
    """The run was cancelled; the epochs finished are in results.csv."""


class Clock:
    """Arm-epochs done of all planned, the time left from the mean arm-epoch so far (training + evaluation)."""

    def __init__(self, total: int, on_epoch=None) -> None:
        self.total, self.done, self.on_epoch = total, 0, on_epoch
        self.started = time.perf_counter()

    @staticmethod
    def plan_text(arms: int, seeds: int, epochs: int, images: int) -> str:
        return (f"plan: {arms} arm(s) × {seeds} seed(s) × {epochs} epoch(s) = {arms * seeds * epochs} arm-epochs of "
                f"{images} images each; the time left is estimated after the first epoch.")

    def seconds_left(self) -> float | None:
        if not self.done:
            return None
        return (time.perf_counter() - self.started) / self.done * (self.total - self.done)

    def tick(self, row: dict) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        left = self.seconds_left()
        if self.done == 1:
            tqdm.write(f"estimate from the first epoch: {format_duration(elapsed)} per arm-epoch, so about "
                       f"{format_duration(elapsed * self.total)} for all {self.total}")
        tqdm.write(f"  [{self.done}/{self.total} arm-epochs, about {format_duration(left)} left]")
        if self.on_epoch is not None:
            self.on_epoch(row, self.done, self.total, left)



def _finish(out, rows, class_rows, plan, pools, classes, seeds, s, workspace, val_dir, originals, val, device,
            export_dir, results_csv, per_class_csv, record_gains) -> TrainReport:
    """The pictures, summary.md and, for per-prompt arms, the gains stored in the workspace."""
    names = [a.name for a in plan]
    report = TrainReport(rows=rows, results_csv=results_csv, curves_png=plot_curves(rows, out / "curves.png"),
                         summary_md=out / "summary.md", export_dir=export_dir, per_class_csv=per_class_csv,
                         class_rows=class_rows, gains=arm_gains(rows, names))
    measured = [a for a in plan if a.kind in ("prompt", "without") and a.name in report.gains]
    if measured:
        report.prompt_gains_png = plot_prompt_gains({a.name: report.gains[a.name] for a in measured},
                                                    out / "prompt_gains.png")
        alone = [a for a in measured if a.kind == "prompt"]
        if alone:
            matrix = class_gain_matrix(class_rows, [a.name for a in alone], classes)
            report.gains_png = plot_class_gains(matrix, [a.prompt for a in alone], classes, out / "gains.png")
    facts = {"workspace": workspace, "sources": len(originals), "classes": len(classes),
             "with_generated": originals.sources_with_generated, "generated": int(originals.generated_counts.sum()),
             "val_dir": val_dir, "val": len(val), "device": device}
    report.summary_md.write_text(summary_markdown(rows, class_rows, plan, pools, facts, s, seeds), encoding="utf-8")
    if record_gains:
        report.stored_gains = _store_gains(workspace, plan, report.gains, rows, s, seeds, val_dir, out)
    return report


def _store_gains(workspace, plan, gains, rows, s, seeds, val_dir, out) -> int:
    """Per-prompt arms' gains into the workspace's prompt_gains table (kind 'alone'), and, with an online arm over
    every prompt, each leave-one-out arm's contribution (online − without it, paired by seed)."""
    from ..workspace.folder import Workspace
    from ..workspace.prompt_gains import record_prompt_gains

    common = {"repeats": len(seeds), "model": s.model, "epochs": s.epochs,
              "settings": {"size": s.size, "p": s.p, "lam": s.lam, "status": s.status, "seed": s.seed,
                           "val_dir": str(val_dir), "out": str(out)}}
    stored = [{"prompt": a.prompt, "kind": "alone", "gain": gains[a.name].mean, "low": gains[a.name].low,
               "high": gains[a.name].high, **common} for a in plan if a.kind == "prompt" and a.name in gains]
    if any(a.name == "online" for a in plan):
        for a in plan:
            if a.kind == "without":
                contribution = arm_gains(rows, ["online"], baseline=a.name).get("online")
                if contribution is not None:
                    stored.append({"prompt": a.prompt, "kind": "leave-one-out", "gain": contribution.mean,
                                   "low": contribution.low, "high": contribution.high, **common})
    return record_prompt_gains(Workspace(workspace, create=False), stored) if stored else 0


def _check_out(out: Path, workspace: Path, overwrite: bool) -> None:
    target, ws = out.resolve(), workspace.resolve()
    if target == ws or ws in target.parents:
        raise BadArgumentError(f"output folder '{out}' is inside the workspace '{workspace}'; choose a folder outside "
                               "it (the default is <workspace>-train beside it).")
    if out.exists() and not out.is_dir():
        raise BadArgumentError(f"output '{out}' is a file; pass a folder.")
    if (out / "results.csv").exists() and not overwrite:
        raise BadArgumentError(f"'{out}' already holds results.csv from an earlier run; pass --overwrite or choose "
                               "another --out.")


def _export_files(workspace: Path, export_dir: Path, status: str, source_ids: set[int], class_to_idx: dict,
                  *, overwrite: bool) -> list[tuple[Path, int]]:
    """Export the augmentations as files with the workspace's own export and list them back from metadata.csv."""
    from ..workspace.folder import Workspace

    Workspace(workspace, create=False).export(export_dir, status=status, overwrite=overwrite, purpose="training")
    with open(export_dir / "metadata.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "augmented"]
    # labels come from metadata.csv's label column (folder names are sanitised); app-saved records are left out,
    # as in DiffuseMixDataset
    return [(export_dir / r["file_name"], class_to_idx[r["label"]]) for r in rows
            if r["source_id"] and int(r["source_id"]) in source_ids and r["label"] in class_to_idx]


def _set_epoch(dataset: torch.utils.data.Dataset, epoch: int, p: float | None = None) -> None:
    """Every DiffuseMixDataset in `dataset` draws from `epoch` next (and with probability `p`, when given)."""
    for part in getattr(dataset, "datasets", [dataset]):
        if isinstance(part, DiffuseMixDataset):
            part.set_epoch(epoch)
            if p is not None and part.p != p:
                part.set_p(p)


def _train_one(arm: Arm, dataset, val: ImageFiles, classes: Sequence[str], per_epoch: int, s: TrainSettings,
               seed: int, device: torch.device, progress: bool, cancel: threading.Event | None = None):
    """Yield (result row, per-class rows) per epoch of training `arm` with `seed` (the initial weights, the image
    order and, through the dataset, every draw)."""
    with torch.random.fork_rng(devices=[]):  # the same initial weights in every arm; the caller's RNG untouched
        torch.manual_seed(seed)
        model, mean, std = build_model(s.model, classes, pretrained=s.pretrained)
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    workers = s.worker_count()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=s.batch_size,
        sampler=torch.utils.data.RandomSampler(dataset, num_samples=per_epoch,
                                               generator=torch.Generator().manual_seed(seed)),
        num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),  # worker seeds: never the global RNG
    )
    val_loader = torch.utils.data.DataLoader(val, batch_size=s.batch_size, num_workers=min(workers, 2),
                                             pin_memory=cuda, persistent_workers=workers > 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=s.learning_rate(), momentum=s.momentum, nesterov=True,
                                weight_decay=s.weight_decay)
    total_steps = s.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(  # cosine from lr to 0 over every step, as AugMix
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    jsd = s.jsd and isinstance(dataset, DiffuseMixDataset) and dataset.jsd

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True).sub_(mean_t).div_(std_t)
        return x.contiguous(memory_format=memory_format)

    name = arm.name
    for epoch in range(1, s.epochs + 1):
        p = arm.p_at(epoch, s.epochs)
        _set_epoch(dataset, epoch, p if arm.kind not in ("baseline", "export") else None)
        model.train()
        started = time.perf_counter()
        loss_sum, seen = 0.0, 0
        bar = tqdm(loader, desc=f"{name} seed {seed} {epoch}/{s.epochs}", unit="batch", leave=False,
                   disable=not progress, dynamic_ncols=True)
        for images, targets in bar:
            if cancel is not None and cancel.is_set():
                bar.close()
                raise TrainingCancelled("training cancelled; the epochs finished so far are in results.csv.")
            targets = targets.to(device, non_blocking=True)
            x = prepare(torch.cat(images) if jsd else images)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(pixel_values=x).logits.float()
            if jsd:
                clean, aug1, aug2 = logits.split(len(targets))
                loss = F.cross_entropy(clean, targets) + jsd_loss(clean, aug1, aug2, weight=s.jsd_weight)
            else:
                loss = F.cross_entropy(logits, targets)
            if not torch.isfinite(loss):
                raise BadArgumentError(f"training diverged in arm {name}, epoch {epoch} (the loss is {loss.item()}); "
                                       "lower --lr.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.item() * len(targets)
            seen += len(targets)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False)
        bar.close()
        val_loss, top1, top5, correct, counts = _evaluate(model, val_loader, prepare, device, amp_dtype, len(classes))
        row = {"arm": name, "seed": seed, "epoch": epoch, "p": round(p, 4), "loss": round(loss_sum / seen, 6),
               "val_loss": round(val_loss, 6), "top1": round(top1, 4), "top5": round(top5, 4), "train_images": seen,
               "seconds": round(time.perf_counter() - started, 3)}
        by_class = [{"arm": name, "seed": seed, "epoch": epoch, "class": c, "correct": correct[i],
                     "images": counts[i], "top1": round(100.0 * correct[i] / counts[i], 4) if counts[i] else 0.0}
                    for i, c in enumerate(classes)]
        top5_text = f", top-5 {top5:.2f}%" if len(classes) > 5 else ""  # with 5 classes or fewer it is always 100%
        tqdm.write(f"{name:>8} seed {seed} epoch {epoch}/{s.epochs}: loss {row['loss']:.4f}, val loss "
                   f"{row['val_loss']:.4f}, top-1 {top1:.2f}%{top5_text} ({row['seconds']:.1f} s)")
        yield row, by_class


@torch.inference_mode()
def _evaluate(model, loader, prepare, device, amp_dtype, n_classes: int
              ) -> tuple[float, float, float, list[int], list[int]]:
    """(mean cross-entropy, top-1 %, top-5 %, correct top-1 per class, images per class) over the validation loader
    (top-5 is top-k for k < 5 classes)."""
    model.eval()
    loss_sum, top1, top5, count = 0.0, 0, 0, 0
    correct = torch.zeros(n_classes, dtype=torch.int64)
    counts = torch.zeros(n_classes, dtype=torch.int64)
    for images, targets in loader:
        targets = targets.to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(pixel_values=prepare(images)).logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = ranked.eq(targets[:, None])
        top1 += int(hits[:, 0].sum())
        top5 += int(hits.any(dim=1).sum())
        count += len(targets)
        cpu_targets = targets.cpu()
        counts += torch.bincount(cpu_targets, minlength=n_classes)
        correct += torch.bincount(cpu_targets[hits[:, 0].cpu()], minlength=n_classes)
    return (loss_sum / count, 100.0 * top1 / count, 100.0 * top5 / count, correct.tolist(), counts.tolist())
