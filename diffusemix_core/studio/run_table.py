"""A finished bulk run as the Dataset tab shows it: a two-column table of what was done, in words and readable
units (times in ms, s or minutes; sizes in B, KB, MB), from the run's summary dict (``DatasetRuns.run``)."""

from __future__ import annotations

from typing import Any

from ..checks import format_duration
from ..checks import format_size

__all__ = ["RUN_TABLE_COLUMNS", "duration_text", "run_table"]

RUN_TABLE_COLUMNS = ["", "this run"]


def duration_text(seconds: float | None) -> str:
    """0.0000049 -> '< 1 ms', 0.0312 -> '31 ms', 4.21 -> '4.2 s', 185 -> '3m05s'."""
    if seconds is None:
        return "–"
    if seconds < 0.001:
        return "< 1 ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return format_duration(seconds)


def run_table(info: dict[str, Any] | None) -> list[list[str]]:
    """[what, value] rows of a run's summary dict ([] for none)."""
    if not info:
        return []
    added, seconds = int(info.get("augmentations_added") or 0), float(info.get("seconds") or 0.0)
    rows = [
        ["result", "cancelled (run again to resume)" if info.get("cancelled") else "done"],
        ["source images", f"{info.get('images_total', 0)}: {info.get('images_processed', 0)} augmented now, "
                          f"{info.get('images_skipped', 0)} already done, {info.get('images_failed', 0)} failed"],
        ["augmentations added", f"{added} of {info.get('augmentations_planned', 0)} planned"],
        ["Î generated / reused", f"{info.get('generations_added', 0)} / {info.get('generations_reused', 0)}"],
        ["time", duration_text(seconds) + (f" ({added / seconds:.2f} augmentations/s)" if added and seconds else "")],
        ["in the model", duration_text(info.get("model_seconds"))],
        ["loading the model", duration_text(info.get("load_seconds"))],
    ]
    if info.get("scorer"):
        rows.append(["scored by", str(info["scorer"])])
    for stage, cpu in (info.get("stage_cpu_seconds") or {}).items():
        rows.append([f"CPU time: {stage}", duration_text(cpu)])
    if info.get("settings_details") or info.get("settings_changed"):
        rows.append(["settings changed since the last run",
                     "; ".join(info.get("settings_details") or info.get("settings_changed"))])
    for path, reason in (info.get("failures") or [])[:10]:
        rows.append([f"failed: {path}", str(reason)])
    for key, value in info.items():  # any size the summary carries, in bytes
        if key.endswith("_bytes") and isinstance(value, (int, float)):
            rows.append([key.removesuffix("_bytes").replace("_", " "), format_size(value)])
    estimate = info.get("estimate") or {}
    if estimate.get("total_seconds") is not None:
        rows.append(["estimated before the run", duration_text(estimate["total_seconds"])])
    return rows
