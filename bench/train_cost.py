"""What a per-prompt training study costs: wall time per arm-epoch of ``train`` for a few models and input sizes.

    python -m bench.train_cost [--images 48] [--epochs 3] [--configs resnet-tiny:64,resnet18:64,resnet-tiny:224]
                               [--device cpu] [--workers 0] [--threads N]

Setup (not timed): `--images` photo-like sources at Flowers102's size (``bench.dataset.build``: 3 classes, 2 Î each
by the real bulk run, every augmentation approved), a validation folder of `--images` / 2 more. Timed: for every
``model:size`` of `--configs`, ``train_arms`` with two arms (baseline, online p=0.5) × one seed × `--epochs` epochs
(the training-size cache filled before, by an untimed 1-epoch run at that size). Per config it prints the mean
training time of an arm-epoch (results.csv's ``seconds``: the optimizer steps, data loading included) and the wall
time of an arm-epoch with its validation pass, and per image; then what a study of 9 prompts costs (10 arms × 3
seeds × 30 epochs = 900 arm-epochs) on 1,020 images (Flowers102's 10 per class), scaled linearly by images.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from bench.dataset import build
from diffusemix_core.training.settings import TrainSettings
from diffusemix_core.training.trainer import train_arms

STUDY_ARM_EPOCHS, STUDY_IMAGES = 900, 1020


def time_config(ws: Path, val: Path, out: Path, model: str, size: int, epochs: int, device: str, workers: int
                ) -> tuple[float, float]:
    """(mean training seconds per arm-epoch, mean wall seconds per arm-epoch with validation)."""
    common = {"model": model, "size": size, "batch_size": 32, "device": device, "workers": workers}
    train_arms(ws, val, out / "warm", arms=["online"], settings=TrainSettings(epochs=1, **common), progress=False,
               record_gains=False)  # fills the training-size cache; not timed
    started = time.perf_counter()
    report = train_arms(ws, val, out / "timed", arms=["baseline", "online"],
                        settings=TrainSettings(epochs=epochs, **common), progress=False, record_gains=False)
    wall = (time.perf_counter() - started) / len(report.rows)
    return sum(r["seconds"] for r in report.rows) / len(report.rows), wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=48, help="training sources (default 48)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per arm (default 3)")
    parser.add_argument("--configs", default="resnet-tiny:64,resnet18:64,resnet-tiny:224",
                        help="comma-separated MODEL:SIZE (default resnet-tiny:64,resnet18:64,resnet-tiny:224)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default torch's; on a machine shared with other jobs, 1 avoids "
                             "oversubscription, which can slow small models twentyfold)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws, _ = build(root, args.images, per_image=2, seed=0, tiny_output=False)
        val_ws, _ = build(root / "val-src", max(3, args.images // 2), per_image=1, seed=1, tiny_output=True)
        val = root / "val-src" / "train"
        print(f"{args.images} training images, {sum(1 for _ in val.rglob('*.jpg'))} validation images, batch 32, "
              f"{args.epochs} epochs × 2 arms")
        print(f"{'model':<12} {'size':>5} {'train s/arm-epoch':>18} {'wall s/arm-epoch':>17} {'ms/image':>9} "
              f"{'study (900 arm-epochs, 1,020 images)':>38}")
        for config in args.configs.split(","):
            model, size = config.split(":")
            train_s, wall_s = time_config(ws, val, root / f"out-{model}-{size}", model, int(size), args.epochs,
                                          args.device, args.workers)
            per_image = wall_s / args.images
            study_h = per_image * STUDY_IMAGES * STUDY_ARM_EPOCHS / 3600
            print(f"{model:<12} {size:>5} {train_s:>18.3f} {wall_s:>17.3f} {1000 * per_image:>9.2f} "
                  f"{study_h:>35.1f} h")


if __name__ == "__main__":
    main()
