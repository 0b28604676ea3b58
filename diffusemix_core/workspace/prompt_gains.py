"""What training measured per prompt, kept with the prompts: the ``prompt_gains`` table.

``train --per-prompt`` stores one row per prompt and run (the gain of final validation top-1 over the baseline, its
95% interval paired by seed, the repeats, model and epochs); the prompt library (app tab, ``prompts`` command)
shows the latest per prompt, and :func:`harmful_prompts` lists the enabled prompts whose latest gain is below zero
with an interval that excludes zero: the ones :func:`disable_prompts` may switch off, after the user said yes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterable, Sequence

from .manifest import now, write

if TYPE_CHECKING:
    from ..engine.prompts import PromptLibrary
    from .folder import Workspace

__all__ = ["GAIN_KINDS", "describe_gain", "disable_prompts", "harmful_prompts", "latest_prompt_gains", "record_prompt_gains"]

GAIN_KINDS = ("alone", "leave-one-out")


def record_prompt_gains(workspace: Workspace, rows: Sequence[dict]) -> int:
    """Store `rows` ({prompt, kind, gain, low, high, repeats, model, epochs, settings}); the number stored."""
    stored = [{"prompt": str(r["prompt"]), "kind": r.get("kind", "alone"), "gain": float(r["gain"]),
               "low": None if r.get("low") is None else float(r["low"]),
               "high": None if r.get("high") is None else float(r["high"]), "repeats": int(r["repeats"]),
               "model": str(r["model"]), "epochs": int(r["epochs"]),
               "settings": json.dumps(r.get("settings") or {}, sort_keys=True, ensure_ascii=False),
               "created_at": now()} for r in rows]
    if stored:
        with workspace.manifest.session() as db, write(db):
            db["prompt_gains"].insert_all(stored)
    return len(stored)


def latest_prompt_gains(workspace: Workspace, kind: str = "alone") -> dict[str, dict]:
    """{prompt: its latest stored row of `kind`} (the newest run wins)."""
    with workspace.manifest.session() as db:
        rows = list(db.query("SELECT * FROM prompt_gains WHERE kind = ? ORDER BY id", [kind]))
    return {r["prompt"]: r for r in rows}


def harmful_prompts(workspace: Workspace) -> list[dict]:
    """The enabled prompts whose latest measured gain (alone) is below zero with a 95% interval below zero too, in
    library order (a gain without an interval, from one seed, is never called harmful)."""
    gains = latest_prompt_gains(workspace)
    enabled = workspace.manifest.get_prompt_library().enabled()
    return [gains[t] for t in enabled if t in gains and gains[t]["high"] is not None and gains[t]["high"] < 0]


def disable_prompts(workspace: Workspace, texts: Iterable[str]) -> PromptLibrary:
    """Switch off the prompts named (kept in the library, never drawn); the stored library."""
    chosen = set(texts)
    library = workspace.manifest.get_prompt_library()
    for entry in library.entries:
        if entry.text in chosen:
            entry.enabled = False
    workspace.manifest.set_prompt_library(library)
    return library


def describe_gain(row: dict | None, *, compact: bool = False) -> str:
    """A stored gain in words: '+1.23 [-0.50, +2.96] (3 seeds)' / '+1.23 (1 seed, no interval)' / '-' when never
    measured; ``compact`` (a table cell): '+1.2 [-0.5, +3.0] ×3' / '+1.2 (1 seed)' / '–'."""
    if row is None:
        return "–" if compact else "-"
    if compact:
        if row["low"] is None:
            return f"{row['gain']:+.1f} (1 seed)"
        return f"{row['gain']:+.1f} [{row['low']:+.1f}, {row['high']:+.1f}] ×{row['repeats']}"
    if row["low"] is None:
        return f"{row['gain']:+.2f} (1 seed, no interval)"
    return f"{row['gain']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}] ({row['repeats']} seeds)"
