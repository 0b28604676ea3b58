"""Review decisions: approve, reject or reset augmentations, with a history of every decision and an undo.

Every decision is one write transaction that (1) records a ``review_batches`` row (who: ``app``, ``cli``, ``auto``
for a rule; what was selected; whether it was a bulk action), (2) records one ``reviews`` row per item with its
previous status, and (3) sets the new status. SQLite serialises these transactions (``BEGIN IMMEDIATE``), so under
any concurrency an item's final status is the last decision committed for it, and its history holds every one.

:func:`undo_last` reverts the last bulk decision that was not undone yet, item by item, but only for items whose
latest decision is still that one (a later decision on an item is never overwritten); the undo is itself recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import BadArgumentError
from .manifest import Manifest, check_status, now, write

__all__ = ["ORIGINS", "Decision", "decide", "describe_undo", "history", "last_bulk", "undo_last"]

ORIGINS = ("app", "cli", "auto", "api")
UNDO = "undo"


@dataclass(frozen=True)
class Decision:
    """What one decision did: its batch id, the status set, how many items it covered and how many changed."""

    batch_id: int | None
    status: str
    matched: int
    changed: int


def _check_origin(origin: str) -> str:
    if origin not in ORIGINS:
        raise BadArgumentError(f"decision origin must be one of {', '.join(ORIGINS)}, got {origin!r}.")
    return origin


def decide(manifest: Manifest, status: str, *, origin: str, ids=None, label=None, prompt=None, max_drift=None,
           min_drift=None, current_status: str | None = None, bulk: bool | None = None, note: Any = None,
           db=None) -> Decision:
    """Set `status` on every augmentation matching ALL the filters given (none: every augmentation), recorded.

    `bulk` marks the decision as one that :func:`undo_last` can revert (default: anything but a single id).
    `note` (JSON-able) is stored with the filters, e.g. the rule of an automatic decision.
    """
    status = check_status(status)
    origin = _check_origin(origin)
    where, params = Manifest.where(label=label, prompt=prompt, status=current_status, max_drift=max_drift,
                                   min_drift=min_drift, ids=ids, prefix="")
    filters = {k: v for k, v in dict(ids=None if ids is None else sorted({int(i) for i in ids}), label=label,
                                     prompt=prompt, max_drift=max_drift, min_drift=min_drift,
                                     current_status=current_status).items() if v is not None}
    if note is not None:
        filters["note"] = note
    if bulk is None:
        bulk = not (ids is not None and len(set(ids)) == 1)
    stamp = now()
    with manifest.session(db) as db, write(db):
        batch_id = db.execute(
            "INSERT INTO review_batches (created_at, origin, status, bulk, filters) VALUES (?, ?, ?, ?, ?)",
            [stamp, origin, status, int(bulk), json.dumps(filters, ensure_ascii=False, default=str)],
        ).lastrowid
        matched = db.execute(
            "INSERT INTO reviews (batch_id, augmentation_id, status, previous_status, origin, created_at) "
            f"SELECT ?, id, ?, status, ?, ? FROM augmentations{where}", [batch_id, status, origin, stamp, *params],
        ).rowcount
        db.execute("UPDATE augmentations SET status = ?, reviewed_at = ? "
                   "WHERE id IN (SELECT augmentation_id FROM reviews WHERE batch_id = ?)", [status, stamp, batch_id])
        changed = db.execute("SELECT count(*) FROM reviews WHERE batch_id = ? AND previous_status != status",
                             [batch_id]).fetchone()[0]
        db.execute("UPDATE review_batches SET count = ? WHERE id = ?", [matched, batch_id])
    return Decision(batch_id=batch_id, status=status, matched=matched, changed=changed)


def history(manifest: Manifest, augmentation_id: int) -> list[dict]:
    """Every decision on one augmentation, oldest first: status, previous status, origin, when, batch."""
    with manifest.session() as db:
        return list(db.query(
            "SELECT r.id, r.batch_id, r.status, r.previous_status, r.origin, r.created_at, b.bulk, b.status AS action "
            "FROM reviews r JOIN review_batches b ON b.id = r.batch_id WHERE r.augmentation_id = ? ORDER BY r.id",
            [int(augmentation_id)]))


def last_bulk(manifest: Manifest, db=None) -> dict | None:
    """The last bulk decision that can still be undone (not an undo, not undone), or None."""
    with manifest.session(db) as db:
        rows = list(db.query(
            "SELECT * FROM review_batches WHERE bulk = 1 AND status != ? AND undone_by IS NULL "
            "ORDER BY id DESC LIMIT 1", [UNDO]))
    return rows[0] if rows else None


def undo_last(manifest: Manifest, *, origin: str) -> tuple[dict, Decision] | None:
    """Revert the last bulk decision (see the module docstring); None when there is nothing to undo.

    Returns (the batch undone, the undo decision): ``matched`` is how many items were in the batch, ``changed``
    how many were restored (items decided again since are left as they are).
    """
    origin = _check_origin(origin)
    stamp = now()
    with manifest.session() as db, write(db):
        batch = last_bulk(manifest, db)
        if batch is None:
            return None
        restore = db.execute(
            "SELECT r.augmentation_id, r.previous_status, a.status FROM reviews r "
            "JOIN augmentations a ON a.id = r.augmentation_id WHERE r.batch_id = ? "
            "AND r.id = (SELECT max(id) FROM reviews WHERE augmentation_id = r.augmentation_id)", [batch["id"]],
        ).fetchall()
        undo_id = db.execute(
            "INSERT INTO review_batches (created_at, origin, status, bulk, filters, count) VALUES (?, ?, ?, 0, ?, ?)",
            [stamp, origin, UNDO, json.dumps({"undo": batch["id"]}), len(restore)],
        ).lastrowid
        for aug_id, previous, current in restore:
            db.execute("INSERT INTO reviews (batch_id, augmentation_id, status, previous_status, origin, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", [undo_id, aug_id, previous, current, origin, stamp])
            db.execute("UPDATE augmentations SET status = ?, reviewed_at = ? WHERE id = ?", [previous, stamp, aug_id])
        db.execute("UPDATE review_batches SET undone_by = ? WHERE id = ?", [undo_id, batch["id"]])
    return batch, Decision(batch_id=undo_id, status=UNDO, matched=batch["count"], changed=len(restore))


def describe_undo(undone: tuple[dict, Decision] | None) -> str:
    """What :func:`undo_last` did, in one sentence (the command line and the app say it in the same words)."""
    if undone is None:
        return "There is nothing to undo: no bulk decision is left to revert."
    batch, decision = undone
    kept = decision.matched - decision.changed
    when = str(batch["created_at"])[:19].replace("T", " ")
    return (f"Undid '{batch['status']}' of {batch['count']} augmentation(s) (decision #{batch['id']}, "
            f"{batch['origin']}, {when}): {decision.changed} restored"
            + (f", {kept} left as they are ({kept} decided again since)." if kept else "."))
