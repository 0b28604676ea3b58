"""The spread of a training comparison: mean ± standard deviation over seeds, and the gain of an arm over the
baseline with a 95% t interval paired by seed (each seed's arm and baseline share their initial weights, image
order and draws, so their difference cancels what the seed alone does).

Pure functions of lists of numbers; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Gain", "mean_sd", "paired_gain", "t_quantile"]

# the 97.5% quantile of Student's t with df degrees of freedom (two-sided 95%)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile(df: int) -> float:
    """Student's t 0.975 quantile for `df` >= 1 (table; between tabled values the next smaller df, conservative)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df in _T975:
        return _T975[df]
    smaller = [k for k in _T975 if k < df]
    return _T975[max(smaller)] if df <= 120 else 1.960


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation; None for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class Gain:
    """An arm's gain over the baseline, paired by seed: mean difference, its 95% t interval (None with one seed)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    @property
    def known(self) -> bool:
        return self.low is not None

    @property
    def verdict(self) -> str:
        """'better', 'worse' (the interval excludes 0), 'noise' (it holds 0) or 'unknown' (one seed)."""
        if not self.known:
            return "unknown"
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "noise"

    def text(self, digits: int = 2) -> str:
        if not self.known:
            return f"{self.mean:+.{digits}f} (interval unknown: 1 seed)"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired_gain(arm: Sequence[float], baseline: Sequence[float]) -> Gain:
    """The gain of `arm` over `baseline`, the i-th values of each from the same seed."""
    if len(arm) != len(baseline) or not arm:
        raise ValueError("paired_gain needs as many values (seeds) in both, at least one")
    diffs = [a - b for a, b in zip(arm, baseline)]
    mean, sd = mean_sd(diffs)
    if sd is None:
        return Gain(mean, None, None, 1)
    half = t_quantile(len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return Gain(mean, mean - half, mean + half, len(diffs))
