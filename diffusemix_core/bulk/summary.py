"""The words of a finished bulk run: one readable line of a :class:`~diffusemix_core.bulk.stages.RunSummary`.

The command line (``augment``) and the app's Dataset tab say the same thing in the same words:

    15 images: 12 augmented now, 3 already done, 0 failed; 24 augmentations added (12 generated, 12 reused) in
    6.3 s (3.8 augmentations/s)

:func:`describe_run` is that sentence; :func:`summary_line` adds the scorer and the first failures, for a place
that shows one line (the app); the command line prints each failure on a line of its own instead.
"""

from __future__ import annotations

from .stages import RunSummary

__all__ = ["describe_run", "describe_failures", "settings_changed_note", "summary_line"]


def describe_run(summary: RunSummary) -> str:
    """What was done and how fast, in one sentence without a full stop."""
    rate = summary.augmentations_added / summary.seconds if summary.seconds > 0 else 0.0
    return (f"{summary.images_total} images: {summary.images_processed} augmented now, {summary.images_skipped} "
            f"already done, {summary.images_failed} failed; {summary.augmentations_added} augmentations added "
            f"({summary.generations_added} generated, {summary.generations_reused} reused) in "
            f"{summary.seconds:.1f} s ({rate:.1f} augmentations/s)")


def describe_failures(summary: RunSummary, limit: int | None = None) -> list[str]:
    """'<path>: <reason>' per failed file (the first `limit`, and '… and N more' when some are left out)."""
    failures = summary.failures if limit is None else summary.failures[:limit]
    lines = [f"{path}: {reason}" for path, reason in failures]
    if limit is not None and len(summary.failures) > limit:
        lines.append(f"… and {len(summary.failures) - limit} more")
    return lines


def settings_changed_note(summary: RunSummary) -> str:
    """Why some augmentations of a resumed run were made with other values ('' when none changed)."""
    if not summary.settings_changed:
        return ""
    named = "; ".join(summary.settings_details or summary.settings_changed)
    return (f"This run's settings differ from the previous run's ({named}): augmentations already "
            "in the workspace were kept as they were, only missing ones used the new values (use a new workspace to "
            "redo everything).")


def summary_line(summary: RunSummary, *, failures: int = 5) -> str:
    """:func:`describe_run`, the scorer of the run's scores and the first `failures` failed files: one line."""
    text = describe_run(summary)
    if summary.scorer:
        text += f"; scored by {summary.scorer}"
    failed = describe_failures(summary, failures)
    if failed:
        text += "; failed: " + "; ".join(failed)
    for note in summary.label_notes:
        text += f"; note: {note.rstrip('.')}"
    if summary.ignored:
        text += f"; skipped {len(summary.ignored)} entries that are not regular files (first: {summary.ignored[0][0]})"
    return text + "."
