"""The settings of a training comparison: everything that is the same for every arm (model, schedule, optimizer,
the online arm's p, λ and JSD, the input size, the seed, the device), with their defaults and checks."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..checks import check_int
from ..errors import BadArgumentError
from ..engine.mixing import check_lam_range

__all__ = ["TrainSettings"]


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

    def check(self) -> None:
        """BadArgumentError naming the first setting that cannot train, with its value and the rule."""
        for name in ("epochs", "batch_size", "size"):
            check_int(name.replace("_", "-"), getattr(self, name), minimum=1)
        if self.worker_count() < 0:
            raise BadArgumentError(f"workers must be >= 0, got {self.workers}.")
        if not self.learning_rate() > 0 or not math.isfinite(self.learning_rate()):
            raise BadArgumentError(f"the learning rate must be a positive number, got {self.lr!r}.")
        for name in ("weight_decay", "momentum", "jsd_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise BadArgumentError(f"{name.replace('_', '-')} must be a number >= 0, got {value!r}.")
        if not 0.0 <= self.p <= 1.0:
            raise BadArgumentError(f"p (the probability of a DiffuseMix image) must be in [0, 1], got {self.p!r}.")
        check_lam_range(self.lam)
