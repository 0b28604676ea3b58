"""The manifest of a workspace: ``W/manifest.sqlite``, written with sqlite-utils (schema in docs/workspace.md).

The story, top to bottom:

1. the schema (``sources`` → ``generations`` → ``augmentations``; ``reviews`` and ``review_batches`` for every
   decision; ``scorers`` and ``scores`` for curation (scores.py); ``prompts``, ``meta``, ``exports``, ``runs``;
   ``pending_files``, the crash journal) and its migration;
2. connections: a NEW connection per call or thread (Gradio handlers run in threads), WAL mode, and write
   transactions that take the write lock up front (``BEGIN IMMEDIATE``), so concurrent writers are serialised;
3. records: inserting sources, generations and augmentations from an :class:`engine.AugmentationRecord`;
4. the crash journal: files about to be written are journalled first, the row transaction clears them;
5. queries: one augmentation, filtered lists, counts, a summary.

Decisions (approve/reject, history, undo) are in ``decisions.py``; files are in ``store.py``; the folder as a whole
(opening it safely, locks, backups, clean-up) is ``workspace.py``.

A little over the house's ~450 lines: the schema (as SQL, with comments per column) is a third of it.
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
from .files import UNLABELLED, pid_alive

if TYPE_CHECKING:
    from ..engine.diffusemix import AugmentationRecord
    from ..engine.prompts import PromptLibrary

__all__ = ["MANIFEST_NAME", "SCHEMA_VERSION", "STATUSES", "UNLABELLED", "Manifest", "check_status",
           "generation_cache_key", "now", "write"]

MANIFEST_NAME = "manifest.sqlite"
SCHEMA_VERSION = "2"
STATUSES = ("pending", "approved", "rejected")
_CHUNK = 500  # SQLite's parameter limit is far above; chunks keep statements small

AUGMENTATIONS_DDL = """CREATE TABLE IF NOT EXISTS augmentations (
        id INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL REFERENCES sources(id),
        generation_id INTEGER NOT NULL REFERENCES generations(id),
        job_key TEXT NOT NULL,           -- 'slot:3', 'prompt:autumn' (--all-prompts) or 'app:<hash>'
        slot INTEGER,
        label TEXT,
        prompt TEXT NOT NULL,
        mask TEXT NOT NULL,
        fractal TEXT NOT NULL,
        fractal_path TEXT,               -- the fractal image F is fitted from, in the store
        lam REAL NOT NULL,
        feather INTEGER NOT NULL DEFAULT 0,
        seed INTEGER NOT NULL,           -- the generation seed asked for (generations.seed: the one used)
        path TEXT,                       -- A in the store when stored (schema 1); NULL: composed from I, Î, F
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
        drift REAL,
        run_id INTEGER,
        remixed_from INTEGER REFERENCES augmentations(id),  -- re-mixed in the app from this augmentation
        created_at TEXT NOT NULL,
        reviewed_at TEXT,
        UNIQUE (source_id, job_key)
    )"""

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sources (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL,              -- relative to the train dir (posix), or the app's source name
        label TEXT,                      -- class folder name exactly as on disk
        sha256 TEXT NOT NULL,            -- sha256 of the file's bytes (of the stored PNG for app sources)
        pixels_sha256 TEXT,              -- sha256 of shape + decoded RGB pixels (images.image_key)
        width INTEGER,
        height INTEGER,
        image_path TEXT,                 -- decoded, orientation-corrected copy in the store
        status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
        error TEXT,                      -- why it failed
        origin TEXT NOT NULL DEFAULT 'dataset',   -- 'dataset' (bulk run) or 'app' (save_record)
        created_at TEXT NOT NULL,
        UNIQUE (path, sha256)
    )""",
    """CREATE TABLE IF NOT EXISTS generations (
        id INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL REFERENCES sources(id),
        prompt TEXT NOT NULL,
        prompt_text TEXT NOT NULL,       -- the rendered prompt the model saw
        template TEXT,
        seed INTEGER NOT NULL,           -- the seed that made this image
        requested_seed INTEGER NOT NULL, -- the seed asked for (differs after a degenerate-output retry)
        model TEXT NOT NULL,
        revision TEXT,
        steps INTEGER,
        guidance_scale REAL,
        image_guidance_scale REAL,
        resolution INTEGER,
        settings TEXT,                   -- JSON of GenerationSettings.cache_key()
        is_test_model INTEGER NOT NULL DEFAULT 0,
        path TEXT NOT NULL,
        drift REAL,
        cache_key TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    )""",
    AUGMENTATIONS_DDL,
    """CREATE TABLE IF NOT EXISTS review_batches (
        id INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL,
        origin TEXT NOT NULL,            -- 'app', 'cli', 'auto' (a rule), 'undo'
        status TEXT NOT NULL,            -- the status set (for an undo: 'undo')
        bulk INTEGER NOT NULL DEFAULT 0, -- 1 for a bulk decision (several items or a filter): what undo reverts
        filters TEXT,                    -- JSON: what was selected
        count INTEGER NOT NULL DEFAULT 0,
        undone_by INTEGER REFERENCES review_batches(id)
    )""",
    """CREATE TABLE IF NOT EXISTS reviews (
        id INTEGER PRIMARY KEY,
        batch_id INTEGER NOT NULL REFERENCES review_batches(id),
        augmentation_id INTEGER NOT NULL REFERENCES augmentations(id),
        status TEXT NOT NULL,
        previous_status TEXT NOT NULL,
        origin TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS prompts (
        position INTEGER PRIMARY KEY,
        text TEXT NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1
    )""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    """CREATE TABLE IF NOT EXISTS exports (
        id INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL,
        path TEXT NOT NULL,
        zip_path TEXT,
        count INTEGER NOT NULL,
        originals INTEGER NOT NULL DEFAULT 0,
        status_filter TEXT NOT NULL,
        filters TEXT                     -- JSON of every filter used
    )""",
    """CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        train_dir TEXT,
        args TEXT,                       -- JSON: per_image, seed, lam, settings, prompts, fractals, ...
        images_total INTEGER,
        images_failed INTEGER,
        augmentations_added INTEGER,
        generations_added INTEGER,
        generations_reused INTEGER,
        cancelled INTEGER
    )""",
    """CREATE TABLE IF NOT EXISTS pending_files (
        path TEXT NOT NULL,
        pid INTEGER NOT NULL,
        created_at TEXT NOT NULL
    )""",
    # curation scores (scores.py): one row per scorer configuration, then one row per (image, scorer, metric)
    """CREATE TABLE IF NOT EXISTS scorers (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,              -- 'label' (zero-shot CLIP label consistency) or 'quality' (flags)
        model TEXT NOT NULL,             -- the CLIP model id or folder; 'quality' for the flags
        settings TEXT NOT NULL,          -- JSON: revision, templates, class names (label); thresholds (quality)
        key TEXT NOT NULL UNIQUE,        -- sha256 of kind, model and settings
        is_test_model INTEGER NOT NULL DEFAULT 0,  -- 1: untrained test scorer, its scores mean nothing
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS scores (
        target TEXT NOT NULL CHECK (target IN ('generation', 'augmentation')),  -- Î or A
        target_id INTEGER NOT NULL,      -- generations.id or augmentations.id
        scorer_id INTEGER NOT NULL REFERENCES scorers(id),
        metric TEXT NOT NULL,            -- label_prob, label_rank, top_prob (text: top class), flags (text: names)
        value REAL,
        text TEXT,
        PRIMARY KEY (target, target_id, scorer_id, metric)
    ) WITHOUT ROWID""",
]
_TABLES = [statement.split("EXISTS", 1)[1].split("(", 1)[0].strip() for statement in SCHEMA
           if statement.lstrip().startswith("CREATE TABLE")]
INDEXES = [
    "CREATE INDEX IF NOT EXISTS idx_sources_label ON sources(label)",
    "CREATE INDEX IF NOT EXISTS idx_sources_status ON sources(status)",
    "CREATE INDEX IF NOT EXISTS idx_sources_pixels ON sources(pixels_sha256)",
    "CREATE INDEX IF NOT EXISTS idx_sources_sha ON sources(sha256)",
    "CREATE INDEX IF NOT EXISTS idx_generations_source ON generations(source_id)",
    "CREATE INDEX IF NOT EXISTS idx_augmentations_status ON augmentations(status)",
    "CREATE INDEX IF NOT EXISTS idx_augmentations_label ON augmentations(label)",
    "CREATE INDEX IF NOT EXISTS idx_augmentations_prompt ON augmentations(prompt)",
    "CREATE INDEX IF NOT EXISTS idx_augmentations_drift ON augmentations(drift)",
    "CREATE INDEX IF NOT EXISTS idx_augmentations_generation ON augmentations(generation_id)",
    "CREATE INDEX IF NOT EXISTS idx_reviews_augmentation ON reviews(augmentation_id)",
    "CREATE INDEX IF NOT EXISTS idx_reviews_batch ON reviews(batch_id)",
    "CREATE INDEX IF NOT EXISTS idx_pending_pid ON pending_files(pid)",
    "CREATE INDEX IF NOT EXISTS idx_scores_value ON scores(scorer_id, metric, target, value)",
]


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
            tables = set(db.table_names())
            if "meta" in tables and set(_TABLES) <= tables:
                row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is not None and row[0] == SCHEMA_VERSION:
                    return
            with write(db):
                version = None
                if "meta" in db.table_names():
                    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                    version = row[0] if row else None
                if version == "1":
                    _migrate_1_to_2(db)
                for statement in SCHEMA + INDEXES:
                    db.execute(statement)
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", [SCHEMA_VERSION])

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
            [path, UNLABELLED if label is None else label, sha256, pixels_sha256, width, height, image_path, origin,
             now()],
        )
        return db.execute("SELECT id FROM sources WHERE path = ? AND sha256 = ?", [path, sha256]).fetchone()[0]

    @staticmethod
    def insert_failed_source(db: sqlite_utils.Database, *, path: str, label: str, sha256: str, error: str) -> None:
        db.execute("DELETE FROM sources WHERE path = ? AND status = 'failed'", [path])
        db.execute(
            "INSERT OR IGNORE INTO sources (path, label, sha256, status, error, origin, created_at) "
            "VALUES (?, ?, ?, 'failed', ?, 'dataset', ?)", [path, label, sha256, error, now()])

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
               "label": UNLABELLED if record.label is None else record.label, "prompt": record.prompt,
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

    def dead_writer_files(self) -> tuple[set[str], set[int]]:
        """(journalled paths, pids) of writers that are no longer running: the only files clean-up may remove."""
        with self.session() as db:
            pending = db.execute("SELECT path, pid FROM pending_files").fetchall()
        dead = {pid for _, pid in pending if not pid_alive(pid)}
        return {path for path, pid in pending if pid in dead}, dead

    def forget_writers(self, pids: Iterable[int], db: sqlite_utils.Database | None = None) -> None:
        pids = list(pids)
        if not pids:
            return
        with self.session(db) as db, write(db):
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
            params.append(label)
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
                "exports": q("SELECT count(*) FROM exports")[0][0],
                "runs": q("SELECT count(*) FROM runs")[0][0],
            }

    def list_exports(self) -> list[dict]:
        with self.session() as db:
            return list(db.query("SELECT * FROM exports ORDER BY id"))


def _migrate_1_to_2(db: sqlite_utils.Database) -> None:
    """Schema 1 → 2 inside the caller's transaction: A no longer has to be stored (``path`` may be NULL), and
    augmentations get ``remixed_from``. SQLite's documented way: new table, copy, drop, rename, re-index."""
    old_columns = [r[1] for r in db.execute("PRAGMA table_info(augmentations)")]
    db.execute(AUGMENTATIONS_DDL.replace("CREATE TABLE IF NOT EXISTS augmentations", "CREATE TABLE augmentations_v2"))
    columns = ", ".join(old_columns)
    db.execute(f"INSERT INTO augmentations_v2 ({columns}) SELECT {columns} FROM augmentations")
    db.execute("DROP TABLE augmentations")
    db.execute("ALTER TABLE augmentations_v2 RENAME TO augmentations")
