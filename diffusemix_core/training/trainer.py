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
import time
import unicodedata
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..engine.devices import resolve_device
from ..engine.fractals import FractalLibrary
from ..errors import BadArgumentError, WorkspaceError
from .dataset import DiffuseMixDataset, ImageFiles, image_folder
from .losses import jsd_loss
from .models import build_model
from .report import ResultsCsv, TrainReport, plot_curves, summary_markdown
from .settings import TrainSettings

__all__ = ["ARMS", "match_classes", "pick_device", "train_arms"]

log = logging.getLogger(__name__)

ARMS: tuple[str, ...] = ("baseline", "export", "online")


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


def train_arms(workspace: str | Path, val_dir: str | Path, out: str | Path, *, arms: Sequence[str] = ARMS,
               settings: TrainSettings = TrainSettings(), overwrite: bool = False, progress: bool = True,
               fractals: FractalLibrary | None = None) -> TrainReport:
    """Train one model per arm on the same seed, schedule and validation set; write results.csv, curves.png and
    summary.md into `out` (the export arm's files go to ``out/export``).

    Every arm sees as many images per epoch as the workspace has sources, so every arm takes the same optimizer
    steps: ``baseline`` the originals; ``export`` draws them from the originals + the exported augmentation files;
    ``online`` from :class:`DiffuseMixDataset` (p, λ), with ``settings.jsd`` adding AugMix's consistency loss.
    """
    workspace, val_dir, out = Path(workspace), Path(val_dir), Path(out)
    arms = _check_arms(arms)
    s = settings
    s.check()
    device = pick_device(s.device)
    _check_out(out, workspace, overwrite)

    fractals = fractals if fractals is not None else FractalLibrary.default()
    common = {"status": s.status, "size": s.size, "seed": s.seed, "fractals": fractals}
    originals = DiffuseMixDataset(workspace, p=0.0, **common)
    classes = originals.classes
    val_classes, val_files = image_folder(val_dir)
    if not val_files:
        raise BadArgumentError(f"validation folder '{val_dir}' holds no images; the layout is DIR/<class>/<image>.")
    match_classes(classes, val_classes, val_dir)
    by_nfc = {unicodedata.normalize("NFC", c): i for i, c in enumerate(classes)}
    val = ImageFiles([(path, by_nfc[unicodedata.normalize("NFC", c)]) for path, c in val_files], size=s.size)
    if originals.sources_with_generated == 0 and set(arms) - {"baseline"}:
        raise WorkspaceError(
            f"workspace '{workspace}' has no {s.status} augmentations, so the export and online arms would be the "
            f"baseline; review first (`review --workspace {workspace} --approve ...`) or train --arms baseline."
        )
    build_model(s.model, classes, pretrained=s.pretrained)  # a missing model fails now, not after an arm

    out.mkdir(parents=True, exist_ok=True)
    datasets: dict[str, torch.utils.data.Dataset] = {}
    export_dir = None
    for arm in arms:
        if arm == "baseline":
            datasets[arm] = originals
        elif arm == "online":
            datasets[arm] = DiffuseMixDataset(workspace, p=s.p, lam=s.lam, jsd=s.jsd, **common)
        else:
            export_dir = out / "export"
            files = _export_files(workspace, export_dir, s.status, set(originals.source_ids.tolist()),
                                  originals.class_to_idx, overwrite=overwrite)
            datasets[arm] = torch.utils.data.ConcatDataset([originals, ImageFiles(files, size=s.size)])

    results = ResultsCsv(out / "results.csv")
    rows: list[dict] = []
    for arm in arms:
        for row in _train_one(arm, datasets[arm], val, classes, len(originals), s, device, progress):
            rows.append(row)
            results.append(row)
    curves_png = plot_curves(rows, out / "curves.png")
    summary_md = out / "summary.md"
    summary_md.write_text(summary_markdown(rows, arms, datasets, originals, val, workspace, val_dir, s, device),
                          encoding="utf-8")
    return TrainReport(rows=rows, results_csv=results.path, curves_png=curves_png, summary_md=summary_md,
                       export_dir=export_dir)


def _check_arms(arms: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(a.strip() for a in arms if a.strip()))
    unknown = [a for a in chosen if a not in ARMS]
    if unknown or not chosen:
        raise BadArgumentError(f"unknown arm(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose among "
                               f"{', '.join(ARMS)}.")
    return chosen


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


def _set_epoch(dataset: torch.utils.data.Dataset, epoch: int) -> None:
    for part in getattr(dataset, "datasets", [dataset]):
        if isinstance(part, DiffuseMixDataset):
            part.set_epoch(epoch)


def _train_one(arm: str, dataset, val: ImageFiles, classes: Sequence[str], per_epoch: int, s: TrainSettings,
               device: torch.device, progress: bool):
    """Yield one result row per epoch of training `arm`."""
    from tqdm import tqdm

    with torch.random.fork_rng(devices=[]):  # the same initial weights in every arm; the caller's RNG untouched
        torch.manual_seed(s.seed)
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
                                               generator=torch.Generator().manual_seed(s.seed)),
        num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(s.seed),  # worker seeds: never the global RNG
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

    for epoch in range(1, s.epochs + 1):
        _set_epoch(dataset, epoch)
        model.train()
        started = time.perf_counter()
        loss_sum, seen = 0.0, 0
        bar = tqdm(loader, desc=f"{arm} {epoch}/{s.epochs}", unit="batch", leave=False, disable=not progress,
                   dynamic_ncols=True)
        for images, targets in bar:
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
                raise BadArgumentError(f"training diverged in arm {arm}, epoch {epoch} (the loss is {loss.item()}); "
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
        val_loss, top1, top5 = _evaluate(model, val_loader, prepare, device, amp_dtype)
        row = {"arm": arm, "epoch": epoch, "loss": round(loss_sum / seen, 6), "val_loss": round(val_loss, 6),
               "top1": round(top1, 4), "top5": round(top5, 4), "train_images": seen,
               "seconds": round(time.perf_counter() - started, 3)}
        top5_text = f", top-5 {top5:.2f}%" if len(classes) > 5 else ""  # with 5 classes or fewer it is always 100%
        tqdm.write(f"{arm:>8} epoch {epoch}/{s.epochs}: loss {row['loss']:.4f}, val loss {row['val_loss']:.4f}, "
                   f"top-1 {top1:.2f}%{top5_text} ({row['seconds']:.1f} s)")
        yield row


@torch.inference_mode()
def _evaluate(model, loader, prepare, device, amp_dtype) -> tuple[float, float, float]:
    """(mean cross-entropy, top-1 %, top-5 %) over the validation loader (top-5 is top-k for k < 5 classes)."""
    model.eval()
    loss_sum, top1, top5, count = 0.0, 0, 0, 0
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
    return loss_sum / count, 100.0 * top1 / count, 100.0 * top5 / count
