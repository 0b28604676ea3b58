"""The trainer behind ``python -m diffusemix_core train``: does DiffuseMix help this model on this data?

:func:`train_arms` trains one model per arm with the same seed, initial weights, schedule and validation set:

* ``baseline``: the originals only;
* ``export``: the originals plus the approved augmentations as exported files (what ``export`` writes);
* ``online``: :class:`training.DiffuseMixDataset`, re-mixing cached Î every epoch (``--jsd`` adds AugMix's loss);

and writes ``results.csv`` (arm, epoch, loss, top-1, top-5), ``curves.png`` (accuracy per epoch, one line per arm)
and ``summary.md`` (the final table). Models are transformers' image classifiers (:func:`build_model`): a ResNet
built from a config to train from scratch, or a pretrained id such as ``microsoft/resnet-50`` to fine-tune. GPU with
mixed precision when present; CPU otherwise. (A little over the house's ~450 lines: the arms, their shared loop
and the three outputs read best in one file.)
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..checks import check_int
from ..errors import BadArgumentError, ModelUnavailableError, WorkspaceError
from ..engine.fractals import FractalLibrary
from .dataset import DiffuseMixDataset, ImageFiles, _lam_range, image_folder, jsd_loss

__all__ = ["ARMS", "TrainReport", "TrainSettings", "build_model", "train_arms"]

log = logging.getLogger(__name__)

ARMS: tuple[str, ...] = ("baseline", "export", "online")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------- models
RESNET_SHAPES: dict[str, dict] = {
    "resnet18": {"embedding_size": 64, "hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2],
                 "layer_type": "basic"},
    "resnet50": {"embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
                 "layer_type": "bottleneck"},
    # a few thousand parameters: tests and smoke runs on a CPU
    "resnet-tiny": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
}
PRETRAINED_IDS = {"resnet18": "microsoft/resnet-18", "resnet50": "microsoft/resnet-50"}


def build_model(model: str, classes: Sequence[str], *, pretrained: bool = False
                ) -> tuple[torch.nn.Module, tuple[float, ...], tuple[float, ...]]:
    """(an image classifier for `classes`, its input mean, its input std).

    `model` is ``resnet18`` / ``resnet50`` (built from a ``ResNetConfig``: from scratch, or with ``pretrained`` the
    ImageNet weights of microsoft/resnet-18 / -50), ``resnet-tiny``, a Hugging Face id or a local folder (its
    config from scratch, or its weights with ``pretrained``; the classifier head is replaced for `classes`). A hub
    id that is not in the cache and cannot be downloaded raises ModelUnavailableError with the remedy.
    """
    labels = {"num_labels": len(classes), "id2label": dict(enumerate(classes)),
              "label2id": {name: i for i, name in enumerate(classes)}}
    if model in RESNET_SHAPES and not (pretrained and model in PRETRAINED_IDS):
        if pretrained:
            raise BadArgumentError(f"{model} has no pretrained weights; drop --pretrained or use resnet18/resnet50.")
        from transformers import ResNetConfig, ResNetForImageClassification

        return ResNetForImageClassification(ResNetConfig(**RESNET_SHAPES[model], **labels)), IMAGENET_MEAN, IMAGENET_STD
    source = PRETRAINED_IDS.get(model, model)
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelUnavailableError(source, f"Model folder '{local}' has no config.json; pass a folder saved by "
                                                "`model.save_pretrained(...)` or a Hugging Face id.")
        load_kwargs: dict = {"local_files_only": True}
        mean, std = _normalisation(local / "preprocessor_config.json")
    else:
        from ..engine.model_loading import resolve_hub_model

        download = resolve_hub_model(source, probe_file="config.json", what="--model", test_model="resnet18")
        load_kwargs = {"local_files_only": not download}
        mean, std = _normalisation(_cached_hub_file(source, "preprocessor_config.json"))
    from transformers import AutoConfig, AutoModelForImageClassification

    try:
        if pretrained:
            net = AutoModelForImageClassification.from_pretrained(source, ignore_mismatched_sizes=True, **labels,
                                                                  **load_kwargs)
        else:
            config = AutoConfig.from_pretrained(source, **load_kwargs)
            for key, value in labels.items():
                setattr(config, key, value)
            net = AutoModelForImageClassification.from_config(config)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailableError(
            source, f"Model '{source}' could not be loaded as an image classifier ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200]}); pass resnet18, resnet50 or an image-classification model."
        ) from exc
    return net, mean, std


def _cached_hub_file(model: str, name: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, name)
    return Path(found) if isinstance(found, str) else None


def _normalisation(preprocessor_config: Path | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's input mean and std from its preprocessor_config.json, else ImageNet's."""
    if preprocessor_config is not None and preprocessor_config.is_file():
        try:
            config = json.loads(preprocessor_config.read_text(encoding="utf-8"))
            mean, std = tuple(map(float, config["image_mean"])), tuple(map(float, config["image_std"]))
            if len(mean) == len(std) == 3:
                return mean, std
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring unreadable %s; normalising with ImageNet's mean and std", preprocessor_config)
    return IMAGENET_MEAN, IMAGENET_STD


# ---------------------------------------------------------------------------------------------- the trainer
@dataclass(frozen=True)
class TrainSettings:
    """Everything that is the same for every arm."""

    model: str = "resnet18"
    pretrained: bool = False
    epochs: int = 30
    batch_size: int = 32
    lr: float | None = None  # None: 0.1 from scratch, 0.01 pretrained, at batch 128, scaled linearly with the batch
    weight_decay: float = 5e-4
    momentum: float = 0.9
    jsd: bool = False  # the online arm adds jsd_weight · JSD over (clean, aug1, aug2), as AugMix does
    jsd_weight: float = 12.0
    p: float = 0.5
    lam: float | tuple[float, float] = 0.2
    status: str = "approved"
    size: int = 224
    seed: int = 0
    device: str = "auto"
    workers: int | None = None  # None: min(8, CPUs - 1)

    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return (0.01 if self.pretrained else 0.1) * self.batch_size / 128

    def worker_count(self) -> int:
        if self.workers is not None:
            return int(self.workers)
        return min(8, max(0, (os.cpu_count() or 1) - 1))


@dataclass
class TrainReport:
    """What :func:`train_arms` wrote: one row per (arm, epoch) and the three output files."""

    rows: list[dict]
    results_csv: Path
    curves_png: Path
    summary_md: Path
    export_dir: Path | None = None


RESULT_COLUMNS = ("arm", "epoch", "loss", "val_loss", "top1", "top5", "train_images", "seconds")


def pick_device(device: str) -> torch.device:
    """``auto``: the first CUDA GPU when there is one, else the CPU; otherwise the device named."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
    for name in ("epochs", "batch_size", "size"):
        check_int(name.replace("_", "-"), getattr(s, name), minimum=1)
    if s.worker_count() < 0:
        raise BadArgumentError(f"workers must be >= 0, got {s.workers}.")
    if not s.learning_rate() > 0 or not math.isfinite(s.learning_rate()):
        raise BadArgumentError(f"the learning rate must be a positive number, got {s.lr!r}.")
    for name in ("weight_decay", "momentum", "jsd_weight"):
        value = getattr(s, name)
        if not (math.isfinite(value) and value >= 0):
            raise BadArgumentError(f"{name.replace('_', '-')} must be a number >= 0, got {value!r}.")
    if not 0.0 <= s.p <= 1.0:
        raise BadArgumentError(f"p (the probability of a DiffuseMix image) must be in [0, 1], got {s.p!r}.")
    _lam_range(s.lam)
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

    results_csv = out / "results.csv"
    with open(results_csv, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(RESULT_COLUMNS)
    rows: list[dict] = []
    for arm in arms:
        for row in _train_one(arm, datasets[arm], val, classes, len(originals), s, device, progress):
            rows.append(row)
            with open(results_csv, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=RESULT_COLUMNS).writerow(row)
    curves_png = _plot(rows, out / "curves.png")
    summary_md = out / "summary.md"
    summary_md.write_text(_summary(rows, arms, datasets, originals, val, workspace, val_dir, s, device),
                          encoding="utf-8")
    return TrainReport(rows=rows, results_csv=results_csv, curves_png=curves_png, summary_md=summary_md,
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

    Workspace(workspace, create=False).export(export_dir, status=status, overwrite=overwrite)
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
        tqdm.write(f"{arm:>8} epoch {epoch}/{s.epochs}: loss {row['loss']:.4f}, val loss {row['val_loss']:.4f}, "
                   f"top-1 {top1:.2f}%, top-5 {top5:.2f}% ({row['seconds']:.1f} s)")
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


def _plot(rows: list[dict], path: Path) -> Path:
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


def _summary(rows: list[dict], arms: Sequence[str], datasets: dict, originals: DiffuseMixDataset, val: ImageFiles,
             workspace: Path, val_dir: Path, s: TrainSettings, device: torch.device) -> str:
    """summary.md: the settings, and the final epoch of each arm with its standard error and the best epoch."""
    n_val = len(val)
    final = {arm: [r for r in rows if r["arm"] == arm][-1] for arm in arms}
    base = final.get("baseline")
    lam = s.lam if isinstance(s.lam, (int, float)) else f"U{tuple(s.lam)}"
    weights = "ImageNet weights" if s.pretrained else "from scratch"
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
        "| arm | train pool | top-1 (%) | top-5 (%) | val loss | best top-1 (%) (epoch) | Δ top-1 vs baseline | "
        "train time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in arms:
        r = final[arm]
        best = max((x for x in rows if x["arm"] == arm), key=lambda x: (x["top1"], -x["epoch"]))
        se = 100.0 * math.sqrt(max(r["top1"] / 100 * (1 - r["top1"] / 100), 0.0) / n_val)
        delta = f"{r['top1'] - base['top1']:+.2f}" if base is not None and arm != "baseline" else "–"
        seconds = sum(x["seconds"] for x in rows if x["arm"] == arm)
        lines.append(f"| {arm} | {len(datasets[arm])} | {r['top1']:.2f} ± {se:.2f} | {r['top5']:.2f} | "
                     f"{r['val_loss']:.4f} | {best['top1']:.2f} ({best['epoch']}) | {delta} | {seconds:.1f} |")
    lines += [
        "",
        f"Final epoch. ± is the binomial standard error of top-1 on {n_val} validation images; with one seed, "
        "differences within about twice it are noise (rerun with other --seed values to be sure). The train pool is "
        "what each epoch's images are drawn from (export: originals + exported augmentation files).",
        "",
    ]
    return "\n".join(lines)
