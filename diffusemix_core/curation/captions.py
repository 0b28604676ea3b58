"""Scores in words: how the Curate view writes a number, a rank, the flags, a tile's caption, and whose scores
these are (with the untrained-scorer warning wherever a test scorer's numbers are shown)."""

from __future__ import annotations

from ..engine.test_models import UNTRAINED_SCORER_NOTE

__all__ = ["caption", "flags_text", "number_text", "rank_text", "scorer_note"]


def number_text(value: float | None, digits: int = 2) -> str:
    """A score as shown: rounded to `digits`, '–' when missing."""
    return "–" if value is None else f"{value:.{digits}f}"


def rank_text(value: float | None) -> str:
    """A rank as shown ('1' = top), '–' when missing."""
    return "–" if value is None else str(int(value))


def flags_text(value: str | None, clean: str = "") -> str:
    """Flags as shown: '–' when not checked, `clean` when checked and clean."""
    return "–" if value is None else (value or clean)


def _row_flags(row: dict) -> str:
    names = [f for f in (row.get("flags") or "").split(",") + (row.get("generated_flags") or "").split(",") if f]
    return ", ".join(dict.fromkeys(names))


def caption(row: dict, selected: bool = False) -> str:
    """A tile's caption, scores first: '✓ #12 pending · p 0.52 · drift 0.31 · ⚑ blank · cats · autumn'."""
    untrained = "*" if row.get("untrained") and row.get("label_prob") is not None else ""
    parts = [f"{'✓ ' if selected else ''}#{row['id']} {row.get('status', '')}",
             f"p {number_text(row.get('label_prob'))}{untrained}", f"drift {number_text(row.get('drift'))}"]
    flags = _row_flags(row)
    if flags:
        parts.append(f"⚑ {flags}")
    parts += [str(row.get("label", "")), str(row.get("prompt", ""))]
    return " · ".join(parts)


def scorer_note(label_scorer: dict | None) -> str:
    """' Label scores (p) by M (scorer #N).' with the untrained-scorer warning; a hint when there are none."""
    if label_scorer is None:
        return " No label scores yet (`python -m diffusemix_core score --workspace W` adds them)."
    text = f" Label scores (p) by `{label_scorer['model']}` (scorer #{label_scorer['id']})."
    if label_scorer.get("is_test_model"):
        text += f" ⚠️ *{UNTRAINED_SCORER_NOTE}.*"
    return text
