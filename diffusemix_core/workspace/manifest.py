"""The manifest of a workspace: ``W/manifest.sqlite``, read and written with sqlite-utils.

The story, top to bottom:

1. connections: a NEW connection per call or thread (Gradio handlers run in threads), WAL mode, and write
   transactions that take the write lock up front (``BEGIN IMMEDIATE``), so concurrent writers are serialised;
   the schema itself and its migrations are ``schema.py``;
2. records: inserting sources, generations and augmentations from an :class:`engine.AugmentationRecord` (labels
   read in NFC, ``labels.read_label``);
3. the crash journal: files about to be written are journalled first, the row transaction clears them;
4. queries: one augmentation, filtered lists, counts, a summary.

Decisions (approve/reject, history, undo) are in ``decisions.py``; files are in ``store.py``; the folder as a whole
(opening it safely, locks, backups, clean-up) is ``folder.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import sqlite_utils

from ..errors import BadArgumentError, WorkspaceError
from .files import pid_alive
from . import schema
from .labels import UNLABELLED, read_label

if TYPE_CHECKING:
    from ..engine.diffusemix import AugmentationRecord
    from ..engine.prompts import PromptLibrary

__all__ = ["MANIFEST_NAME", "STATUSES", "Manifest", "check_status", "generation_cache_key", "now", "write"]

MANIFEST_NAME = "manifest.sqlite"
STATUSES = ("pending", "approved", "rejected")
_CHUNK = 500  # SQLite's parameter limit is far above; chunks keep statements small


# ------------------------------------------------------------------------------------------------ small helpers
def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise BadArgumentError(f"status must be one of {', '.join(STATUSES)}, got {status!r}.")
    return status


def generation_cache_key(pixels_sha256: str, prompt_text: str, settings_key: dict, seed: int) -> str:
    """The key of one Î: source pixels, rendered prompt (template included), model settings and seed."""
    payload = json.dumps(
        {"source": pixels_sha256, "prompt_text": prompt_text, "settings": settings_key, "seed": int(seed)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def write(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One write transaction that takes the write lock up front (no upgrade deadlock under WAL)."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        with db.atomic():  # a savepoint inside: sqlite-utils' own grouping
            yield db
        db.conn.execute("COMMIT")
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise


def _chunks(values: Sequence, size: int = _CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# ------------------------------------------------------------------------------------------------ the manifest
# an export a person asked for (``train`` records its export arm with the purpose "training")
USER_EXPORT = "coalesce(json_extract(filters, '$.purpose'), 'user') = 'user'"


class Manifest:
    """One ``manifest.sqlite``. Every method opens its own connection unless given one (``db=``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Manifest({str(self.path)!r})"

    # connections ---------------------------------------------------------------------------------------------
    def connect(self, *, readonly: bool = False) -> sqlite_utils.Database:
        """A NEW connection (one per call or thread; close ``db.conn`` when done)."""
        if readonly:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        else:
            conn = sqlite3.connect(self.path, timeout=30)
            # safe in WAL mode: a crash never corrupts the manifest, a power loss may lose the last commit
            conn.execute("PRAGMA synchronous=NORMAL")
        return sqlite_utils.Database(conn)

    @contextlib.contextmanager
    def session(self, db: sqlite_utils.Database | None = None) -> Iterator[sqlite_utils.Database]:
        """`db` if given (a caller's long-lived connection), else a new connection closed afterwards."""
        if db is not None:
            yield db
            return
        db = self.connect()
        try:
            yield db
        finally:
            db.conn.close()

    def create_or_migrate(self) -> None:
        """Create the schema in a new file, or bring an older one up to SCHEMA_VERSION (in one transaction).

        A manifest already at SCHEMA_VERSION with every table is only read: opening a workspace to look at it
        (``status``, ``check``, the app) does not write to it.
        """
        with self.session() as db:
            db.enable_wal()  # a no-op read when the file is in WAL mode already
            if schema.is_current(db):
                return
            with write(db):
                schema.create_or_migrate(db)

    def integrity_errors(self) -> list[str]:
        """SQLite's own integrity check: an empty list when the file is sound."""
        with self.session() as db:
            rows = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
        return [] if rows == ["ok"] else rows

    # prompt library ------------------------------------------------------------------------------------------
    def get_prompt_library(self) -> PromptLibrary:
        """The library in use (the paper's default if none was stored yet)."""
        from ..engine.prompts import DEFAULT_TEMPLATE, PromptEntry, PromptLibrary

        with self.session() as db:
            rows = list(db.query("SELECT text, enabled FROM prompts ORDER BY position"))
            template = db.execute("SELECT value FROM meta WHERE key = 'prompt_template'").fetchone()
        if not rows:
            return PromptLibrary.default()
        entries = [PromptEntry(text=r["text"], enabled=bool(r["enabled"])) for r in rows]
        return PromptLibrary(entries=entries, template=template[0] if template else DEFAULT_TEMPLATE)

    def set_prompt_library(self, library: PromptLibrary) -> None:
        """Store `library` as the library in use (validated first)."""
        library.validate()
        with self.session() as db, write(db):
            db.execute("DELETE FROM prompts")
            db["prompts"].insert_all(
                {"position": i, "text": e.text, "enabled": int(e.enabled)} for i, e in enumerate(library.entries)
            )
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('prompt_template', ?)", [library.template])

    # records (inside the caller's write transaction) ------------------------------------------------------------
    @staticmethod
    def insert_source(db: sqlite_utils.Database, *, path: str, label: str | None, sha256: str, pixels_sha256: str,
                      width: int, height: int, image_path: str, origin: str) -> int:
        """The id of the ok source (path, sha256), inserted if new; a failed row for the same path is replaced."""
        db.execute("DELETE FROM sources WHERE path = ? AND status = 'failed'", [path])
        db.execute(
            "INSERT OR IGNORE INTO sources (path, label, sha256, pixels_sha256, width, height, image_path, status, "
            "origin, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'ok', ?, ?)",
            [path, UNLABELLED if label is None else read_label(label), sha256, pixels_sha256, width, height,
             image_path, origin, now()],
        )
        return db.execute("SELECT id FROM sources WHERE path = ? AND sha256 = ?", [path, sha256]).fetchone()[0]

    @staticmethod
    def insert_failed_source(db: sqlite_utils.Database, *, path: str, label: str, sha256: str, error: str) -> None:
        db.execute("DELETE FROM sources WHERE path = ? AND status = 'failed'", [path])
        db.execute(
            "INSERT OR IGNORE INTO sources (path, label, sha256, status, error, origin, created_at) "
            "VALUES (?, ?, ?, 'failed', ?, 'dataset', ?)", [path, read_label(label), sha256, error, now()])

    @staticmethod
    def insert_generation(db: sqlite_utils.Database, record: AugmentationRecord, *, source_id: int, cache_key: str,
                          path: str) -> int:
        """The id of the generation with `cache_key`, inserted from the record if new."""
        s = record.settings
        db.execute(
            "INSERT OR IGNORE INTO generations (source_id, prompt, prompt_text, template, seed, requested_seed, model, "
            "revision, steps, guidance_scale, image_guidance_scale, resolution, settings, is_test_model, path, drift, "
            "cache_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [source_id, record.prompt, record.prompt_text, record.template, int(record.used_seed),
             int(record.requested_seed), record.model, s.get("revision"), s.get("steps"), s.get("guidance_scale"),
             s.get("image_guidance_scale"), s.get("resolution"), json.dumps(s, sort_keys=True),
             int(bool(record.is_test_model)), path, record.drift, cache_key, now()],
        )
        return db.execute("SELECT id FROM generations WHERE cache_key = ?", [cache_key]).fetchone()[0]

    @staticmethod
    def insert_augmentation(db: sqlite_utils.Database, record: AugmentationRecord, *, source_id: int,
                            generation_id: int, job_key: str, slot: int | None, fractal_path: str,
                            status: str = "pending", run_id: int | None = None,
                            remixed_from: int | None = None) -> tuple[int, bool]:
        """(id, added) of the augmentation in slot (source, job_key): inserted from the record unless it exists."""
        row = {"source_id": source_id, "generation_id": generation_id, "job_key": job_key, "slot": slot,
               "label": UNLABELLED if record.label is None else read_label(record.label), "prompt": record.prompt,
               "mask": record.mask_kind, "fractal": record.fractal_id, "fractal_path": fractal_path,
               "lam": float(record.lam), "feather": int(record.feather), "seed": int(record.requested_seed),
               "path": None, "status": check_status(status), "drift": record.drift, "run_id": run_id,
               "remixed_from": remixed_from, "created_at": now()}
        cursor = db.execute(
            f"INSERT OR IGNORE INTO augmentations ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
        aug_id = db.execute("SELECT id FROM augmentations WHERE source_id = ? AND job_key = ?",
                            [source_id, job_key]).fetchone()[0]
        return aug_id, cursor.rowcount == 1

    # the crash journal ----------------------------------------------------------------------------------------
    def journal(self, relpaths: Sequence[str], db: sqlite_utils.Database | None = None) -> None:
        """Record files this process is about to write (committed before the first byte is written)."""
        if not relpaths:
            return
        with self.session(db) as db, write(db):
            db["pending_files"].insert_all(
                ({"path": p, "pid": os.getpid(), "created_at": now()} for p in relpaths), batch_size=_CHUNK
            )

    @staticmethod
    def unjournal(db: sqlite_utils.Database, relpaths: Sequence[str]) -> None:
        """Inside the row transaction: the files are referenced now, no longer pending."""
        pid = os.getpid()
        for chunk in _chunks(list(relpaths)):
            marks = ",".join("?" * len(chunk))
            db.execute(f"DELETE FROM pending_files WHERE pid = ? AND path IN ({marks})", [pid, *chunk])

    def journal_state(self, db: sqlite_utils.Database | None = None) -> tuple[set[str], set[str], set[int]]:
        """(paths journalled by writers that died, paths journalled by live writers, the dead writers' pids).

        Clean-up may remove a dead writer's file only when no live writer journalled it too (the store is
        content-addressed: a live writer skips writing a file that is already there).
        """
        with self.session(db) as db:
            pending = db.execute("SELECT path, pid FROM pending_files").fetchall()
        alive = {pid: pid_alive(pid) for pid in {pid for _, pid in pending}}
        dead = {path for path, pid in pending if not alive[pid]}
        live = {path for path, pid in pending if alive[pid]}
        return dead, live, {pid for pid, up in alive.items() if not up}

    @staticmethod
    def forget_writers(db: sqlite_utils.Database, pids: Iterable[int]) -> None:
        """Inside the caller's write transaction: the journal rows of writers that died (their files are dealt with)."""
        for pid in pids:
            db.execute("DELETE FROM pending_files WHERE pid = ?", [pid])

    def referenced_paths(self, db: sqlite_utils.Database | None = None) -> set[str]:
        """Every store path a row refers to (sources, generations, augmentations' A and fractal)."""
        referenced: set[str] = set()
        with self.session(db) as db:
            for table, column in (("sources", "image_path"), ("generations", "path"), ("augmentations", "path"),
                                  ("augmentations", "fractal_path")):
                referenced.update(
                    r[0] for r in db.execute(f"SELECT DISTINCT {column} FROM {table} WHERE {column} IS NOT NULL"))
        return referenced

    # queries --------------------------------------------------------------------------------------------------
    ROW_SQL = (
        "SELECT a.*, s.path AS source_path, s.image_path AS source_image_path, s.origin AS origin, "
        "s.width AS width, s.height AS height, g.path AS generation_path, g.prompt_text AS prompt_text, "
        "g.template AS template, s.pixels_sha256 AS pixels_sha256, g.seed AS used_seed, g.model AS model, "
        "g.settings AS settings, g.is_test_model AS is_test_model "
        "FROM augmentations a JOIN sources s ON s.id = a.source_id JOIN generations g ON g.id = a.generation_id"
    )
    ORDERS = {"id": "a.id", "drift": "a.drift DESC, a.id"}

    def get_augmentation(self, augmentation_id: int, db: sqlite_utils.Database | None = None) -> dict:
        """One augmentation row joined with its source and generation (paths relative to the workspace)."""
        with self.session(db) as db:
            rows = list(db.query(self.ROW_SQL + " WHERE a.id = ?", [int(augmentation_id)]))
        if not rows:
            raise WorkspaceError(
                f"no augmentation with id {augmentation_id} in '{self.path.parent}'; list them with `status`."
            )
        return rows[0]

    @staticmethod
    def where(*, label=None, prompt=None, status=None, max_drift=None, min_drift=None, ids=None,
              prefix: str = "a.") -> tuple[str, list[Any]]:
        """A WHERE clause (all filters ANDed) over augmentations aliased by `prefix`, and its parameters."""
        a = prefix
        clauses, params = [], []
        if label is not None:
            clauses.append(f"{a}label = ?")
            params.append(read_label(label))
        if prompt is not None:
            clauses.append(f"{a}prompt = ?")
            params.append(prompt)
        if status is not None and status != "all":
            clauses.append(f"{a}status = ?")
            params.append(check_status(status))
        if max_drift is not None:
            clauses.append(f"{a}drift <= ?")
            params.append(float(max_drift))
        if min_drift is not None:
            clauses.append(f"{a}drift >= ?")
            params.append(float(min_drift))
        if ids is not None:
            ids = [int(i) for i in ids]
            clauses.append(f"{a}id IN ({','.join('?' * len(ids))})" if ids else "0")
            params.extend(ids)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def list_augmentations(self, *, label=None, prompt=None, status=None, max_drift=None, min_drift=None,
                           ids=None, order: str = "id", limit: int | None = None, offset: int = 0) -> list[dict]:
        """Augmentation rows (joined like :meth:`get_augmentation`); ``order="drift"`` puts the highest first."""
        if order not in self.ORDERS:
            raise BadArgumentError(f"order must be one of {sorted(self.ORDERS)}, got {order!r}.")
        where, params = self.where(label=label, prompt=prompt, status=status, max_drift=max_drift,
                                   min_drift=min_drift, ids=ids)
        sql = self.ROW_SQL + where + f" ORDER BY {self.ORDERS[order]}"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params.extend([int(limit), int(offset)])
        with self.session() as db:
            return list(db.query(sql, params))

    def summary(self) -> dict:
        """Counts by status, label and prompt; failed sources with their reasons; totals."""
        with self.session() as db:
            q = lambda sql, *p: db.execute(sql, p).fetchall()  # noqa: E731
            by_status = {s: 0 for s in STATUSES}
            by_status.update(dict(q("SELECT status, count(*) FROM augmentations GROUP BY status")))
            by_label: dict[str, dict[str, int]] = {}
            for label, status, n in q("SELECT label, status, count(*) FROM augmentations GROUP BY label, status"):
                by_label.setdefault(label, {s: 0 for s in STATUSES})[status] = n
            by_prompt = dict(q("SELECT prompt, count(*) FROM augmentations GROUP BY prompt ORDER BY prompt"))
            sources = dict(q("SELECT status, count(*) FROM sources GROUP BY status"))
            failures = [
                {"path": p, "label": l, "error": e}
                for p, l, e in q("SELECT path, label, error FROM sources WHERE status = 'failed' ORDER BY path")
            ]
            drift = q("SELECT avg(drift), max(drift) FROM augmentations")[0]
            return {
                "augmentations": sum(by_status.values()),
                "by_status": by_status,
                "by_label": dict(sorted(by_label.items(), key=lambda kv: str(kv[0]))),
                "by_prompt": by_prompt,
                "sources": {"ok": sources.get("ok", 0), "failed": sources.get("failed", 0)},
                "generations": q("SELECT count(*) FROM generations")[0][0],
                "failures": failures,
                "drift": {"mean": drift[0], "max": drift[1]},
                "exports": q(f"SELECT count(*) FROM exports WHERE {USER_EXPORT}")[0][0],
                "training_exports": q(f"SELECT count(*) FROM exports WHERE NOT {USER_EXPORT}")[0][0],
                "runs": q("SELECT count(*) FROM runs")[0][0],
            }

    def list_exports(self, *, training: bool = True) -> list[dict]:
        """Every export, oldest first (`training` False: without the export arms of ``train``)."""
        with self.session() as db:
            return list(db.query("SELECT * FROM exports" + ("" if training else f" WHERE {USER_EXPORT}")
                                 + " ORDER BY id"))
