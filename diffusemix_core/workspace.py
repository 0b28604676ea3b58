"""The workspace: a SQLite manifest plus a content-addressed image store; bulk runs that resume; review; export.

A workspace is a folder::

    W/manifest.sqlite          sources, generations, augmentations, prompts, exports, runs (docs/workspace.md)
    W/images/ab/<sha256>.png   every stored image once, named by the sha256 of its shape + pixels

The story of a bulk run (:func:`run_augment`), top to bottom:

1. walk ``train/<class>/<image>`` (sorted; hidden and non-image files ignored) and stream the files in batches;
2. per file, hash its bytes and look up which augmentation slots (``slot:0`` … ``slot:m-1``, or ``prompt:<p>``
   with ``all_prompts``) are already in the manifest; finished images are skipped without decoding;
3. decode the rest (:func:`images.load_image`; a bad file becomes a ``failed`` source with its reason);
4. draw each missing slot's :class:`Choice` from an rng seeded by (run seed, file sha256, slot), so a run is
   reproducible and a larger ``per_image`` only adds slots;
5. reuse every Î already generated with the same cache key, generate the others in one batched call;
6. mix, write the files atomically (temp file + ``os.replace``), then insert the rows in ONE transaction.

A crash leaves at worst stored files that no row references yet: they are journalled in ``pending_files`` before
being written and removed by :meth:`Workspace.gc` (run at the start of every bulk run) once their writer is dead.

Every method opens its own SQLite connection (``Workspace.db()``), so one :class:`Workspace` may be used from
several threads (Gradio handlers) and several processes may share a workspace: writes take SQLite's write lock
with ``BEGIN IMMEDIATE`` and the manifest runs in WAL mode.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
import unicodedata
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import sqlite_utils

from .errors import BadArgumentError, BadImageError, DiffuseMixError, ModelUnavailableError, WorkspaceError

if TYPE_CHECKING:  # engine/generation pull in the fractal library and torch; import them where used
    from .engine import AugmentationRecord, Choice, DiffuseMix
    from .fractals import FractalLibrary
    from .generation import GenerationSettings, Pix2PixGenerator
    from .prompts import PromptLibrary

log = logging.getLogger(__name__)

__all__ = [
    "Workspace",
    "RunSummary",
    "ExportResult",
    "run_augment",
    "scan_train_dir",
    "check_train_dir",
    "sanitize_label",
    "safe_join",
    "generation_cache_key",
    "STATUSES",
    "UNLABELLED",
]

MANIFEST_NAME = "manifest.sqlite"
IMAGES_DIR = "images"
TMP_PREFIX = ".tmp-"
STATUSES = ("pending", "approved", "rejected")
UNLABELLED = "unlabelled"
SCHEMA_VERSION = "1"
PNG_COMPRESS_LEVEL = 1  # the store is written far more often than read; level 1 is ~2x faster than 6
_IGNORED_DIRS = {"__MACOSX"}
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_FORBIDDEN_CHARS = set('/\\<>:"|?*')
_MAX_NAME_BYTES = 180

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sources (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL,              -- relative to the train dir (posix), or the app's source name
        label TEXT,                      -- class folder name exactly as on disk
        sha256 TEXT NOT NULL,            -- sha256 of the file's bytes (of the stored PNG for app sources)
        pixels_sha256 TEXT,              -- sha256 of shape + decoded RGB pixels (engine.image_key)
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
    """CREATE TABLE IF NOT EXISTS augmentations (
        id INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL REFERENCES sources(id),
        generation_id INTEGER NOT NULL REFERENCES generations(id),
        job_key TEXT NOT NULL,           -- 'slot:3', 'prompt:autumn' (--all-prompts) or 'app:<hash>'
        slot INTEGER,
        label TEXT,
        prompt TEXT NOT NULL,
        mask TEXT NOT NULL,
        fractal TEXT NOT NULL,
        fractal_path TEXT,               -- the fitted fractal F as used, in the store
        lam REAL NOT NULL,
        feather INTEGER NOT NULL DEFAULT 0,
        seed INTEGER NOT NULL,
        path TEXT NOT NULL,              -- the final image A in the store
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
        drift REAL,
        run_id INTEGER,
        created_at TEXT NOT NULL,
        reviewed_at TEXT,
        UNIQUE (source_id, job_key)
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
    "CREATE INDEX IF NOT EXISTS idx_sources_label ON sources(label)",
    "CREATE INDEX IF NOT EXISTS idx_sources_status ON sources(status)",
    "CREATE INDEX IF NOT EXISTS idx_sources_pixels ON sources(pixels_sha256)",
    "CREATE INDEX IF NOT EXISTS idx_generations_source ON generations(source_id)",
    "CREATE INDEX IF NOT EXISTS idx_augmentations_status ON augmentations(status)",
    "CREATE INDEX IF NOT EXISTS idx_augmentations_label ON augmentations(label)",
    "CREATE INDEX IF NOT EXISTS idx_augmentations_prompt ON augmentations(prompt)",
    "CREATE INDEX IF NOT EXISTS idx_augmentations_drift ON augmentations(drift)",
    "CREATE INDEX IF NOT EXISTS idx_augmentations_generation ON augmentations(generation_id)",
    "CREATE INDEX IF NOT EXISTS idx_pending_pid ON pending_files(pid)",
]


# small helpers ---------------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _upload_name(pixels_key: str) -> str:
    """The source name of an app record that came without one."""
    return f"upload:{pixels_key[:16]}"


def _pixels_key(image: np.ndarray) -> str:
    from .engine import image_key

    return image_key(image)


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _encode_png(image: np.ndarray) -> bytes:
    from .images import to_pil

    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to `path` through a temp file in the same folder and ``os.replace``."""
    tmp = path.parent / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}{path.suffix}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def _write(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
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


def _choice_columns(record: AugmentationRecord) -> dict:
    """The augmentations row's columns that come from the record (the app's saves and bulk runs alike)."""
    return {"label": record.label if record.label is not None else UNLABELLED, "prompt": record.prompt,
            "mask": record.mask_kind, "fractal": record.fractal_id, "lam": float(record.lam),
            "feather": int(record.feather), "seed": int(record.seed)}


def _insert_augmentation(db: sqlite_utils.Database, row: dict) -> int:
    """Insert one augmentations row unless its (source, job) slot exists; returns 1 if it was added."""
    cursor = db.execute(
        f"INSERT OR IGNORE INTO augmentations ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        list(row.values()),
    )
    return cursor.rowcount


def generation_cache_key(pixels_sha256: str, prompt_text: str, settings_key: dict, seed: int) -> str:
    """The key of one Î: source pixels, rendered prompt (template included), model settings and seed."""
    payload = json.dumps(
        {"source": pixels_sha256, "prompt_text": prompt_text, "settings": settings_key, "seed": int(seed)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _slot_rng(seed: int, file_sha256: str, job_key: str) -> np.random.Generator:
    """The rng of one augmentation slot: depends on nothing but the run seed, the file and the slot."""
    digest = hashlib.sha256(f"{file_sha256}\0{job_key}".encode("utf-8")).digest()
    words = np.frombuffer(digest[:16], dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


def _job_keys(per_image: int, prompts: list[str] | None) -> list[tuple[str, int | None, str | None]]:
    """(job_key, slot, fixed prompt) for every augmentation an image should have."""
    if prompts is not None:
        return [(f"prompt:{p}", None, p) for p in prompts]
    return [(f"slot:{i}", i, None) for i in range(per_image)]


# file-system safety ----------------------------------------------------------------------------------------
def sanitize_label(label: str | None) -> str:
    """A single safe folder name for `label`: keeps Unicode letters and spaces, drops what a filesystem forbids.

    Path separators, NUL, control characters and ``<>:"|?*`` become ``_``; leading/trailing dots and spaces are
    stripped (no hidden folders, no ``..``); Windows reserved names get a ``_`` prefix; the result is cut to
    180 UTF-8 bytes and is never empty.
    """
    text = unicodedata.normalize("NFC", UNLABELLED if label is None else str(label))
    chars = []
    for ch in text:
        if ch in _FORBIDDEN_CHARS or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            chars.append("_")
        else:
            chars.append(ch)
    name = "".join(chars).strip(" .")
    if not name or set(name) <= {"_", "."}:
        name = "_" + name if name else "_"
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    encoded = name.encode("utf-8")
    if len(encoded) > _MAX_NAME_BYTES:
        name = encoded[:_MAX_NAME_BYTES].decode("utf-8", errors="ignore").rstrip(" .") or "_"
    return name


def safe_join(root: str | Path, *parts: str) -> Path:
    """``root / part1 / part2 …``, refusing any part that is not one plain name or a result outside `root`."""
    root_resolved = Path(root).resolve()
    for part in parts:
        if (
            not part
            or part in (".", "..")
            or "/" in part
            or "\\" in part
            or "\x00" in part
            or any(unicodedata.category(ch) == "Cc" for ch in part)
        ):
            raise WorkspaceError(
                f"refusing to write {part!r} under '{root}': not a plain file or folder name; sanitise it first."
            )
    target = root_resolved.joinpath(*parts)
    resolved = target.resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise WorkspaceError(f"refusing to write '{resolved}': it is outside the export folder '{root_resolved}'.")
    return target


def _label_folders(labels: Iterable[str]) -> dict[str, str]:
    """Map each label to a sanitised folder name, unique case-insensitively (case-insensitive filesystems)."""
    taken: set[str] = set()
    out: dict[str, str] = {}
    for label in sorted(set(labels)):
        base = sanitize_label(label)
        name, n = base, 2
        while name.casefold() in taken:
            name = f"{base}_{n}"
            n += 1
        taken.add(name.casefold())
        out[label] = name
    return out


def check_train_dir(train_dir: str | Path) -> Path:
    """`train_dir` as a Path; BadArgumentError if it is not a folder."""
    root = Path(train_dir)
    if not root.is_dir():
        raise BadArgumentError(
            f"train dir '{root}' is not a folder; pass --train-dir DIR holding one folder per class "
            "(DIR/<class>/<image>)."
        )
    return root


def scan_train_dir(train_dir: str | Path) -> list[tuple[str, str]]:
    """(relative posix path, label) of every image file under ``train_dir/<class>/``, sorted.

    The label is the class folder's name exactly as on disk. Hidden files and folders, ``__MACOSX`` and files
    whose extension is not an image extension are ignored; class folders are walked recursively.
    """
    from .images import IMAGE_EXTENSIONS

    root = check_train_dir(train_dir)
    found: list[tuple[str, str]] = []
    stray = 0
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in _IGNORED_DIRS:
            continue
        if not entry.is_dir():
            stray += entry.is_file()
            continue
        for dirpath, dirnames, filenames in os.walk(entry.path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _IGNORED_DIRS)
            for name in sorted(filenames):
                if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                rel = Path(dirpath, name).relative_to(root).as_posix()
                found.append((rel, entry.name))
    if stray:
        log.warning("ignored %d file(s) directly in %s: images must be in class folders", stray, root)
    found.sort()
    return found


# results ---------------------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    """What a bulk run did. ``images_ok`` counts sources that are usable (processed now or complete before)."""

    run_id: int
    images_total: int = 0
    images_processed: int = 0
    images_skipped: int = 0
    images_failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path relative to train dir, reason)
    augmentations_added: int = 0
    generations_added: int = 0
    generations_reused: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0  # inside generator.generate
    load_seconds: float = 0.0  # loading the model (once)
    cancelled: bool = False

    @property
    def images_ok(self) -> int:
        return self.images_processed + self.images_skipped


@dataclass
class ExportResult:
    path: Path
    count: int
    zip_path: Path | None = None
    originals: int = 0
    export_id: int | None = None


# the workspace ---------------------------------------------------------------------------------------------
class Workspace:
    """A folder with ``manifest.sqlite`` (WAL) and ``images/``; see the module docstring and docs/workspace.md."""

    def __init__(self, path: str | Path, *, create: bool = True, durable: bool = True) -> None:
        self.path = Path(path)
        self.db_path = self.path / MANIFEST_NAME
        self.images_path = self.path / IMAGES_DIR
        self.durable = durable  # fsync every stored file before it is renamed into place
        self._pool: ThreadPoolExecutor | None = None  # store writers, created on first use
        self._pool_lock = threading.Lock()
        if self.path.exists() and not self.path.is_dir():
            raise WorkspaceError(f"workspace '{self.path}' is a file; pass a folder (it is created if missing).")
        if not self.db_path.exists():
            if not create:
                raise WorkspaceError(
                    f"no workspace at '{self.path}' (no {MANIFEST_NAME}); run `augment --workspace {self.path}` first."
                )
            self.path.mkdir(parents=True, exist_ok=True)
        self.images_path.mkdir(exist_ok=True)
        db = self.db()
        try:
            db.enable_wal()
            with _write(db):
                for statement in SCHEMA:
                    db.execute(statement)
                db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", [SCHEMA_VERSION])
        finally:
            db.conn.close()
        self._remove_dead_temp_files()

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    # connections -----------------------------------------------------------------------------------------
    def db(self) -> sqlite_utils.Database:
        """A NEW connection to the manifest (one per call or thread; close ``db.conn`` when done)."""
        conn = sqlite3.connect(self.db_path, timeout=30)
        # safe in WAL mode: a crash never corrupts the manifest, a power loss may lose the last commit
        conn.execute("PRAGMA synchronous=NORMAL")
        return sqlite_utils.Database(conn)

    @contextlib.contextmanager
    def _session(self, db: sqlite_utils.Database | None = None) -> Iterator[sqlite_utils.Database]:
        """`db` if given (a caller's long-lived connection), else a new connection closed afterwards."""
        if db is not None:
            yield db
            return
        db = self.db()
        try:
            yield db
        finally:
            db.conn.close()

    # image store -----------------------------------------------------------------------------------------
    def store_relpath(self, key: str) -> str:
        """Where the image with content key `key` lives, relative to the workspace."""
        return f"{IMAGES_DIR}/{key[:2]}/{key}.png"

    def abspath(self, relpath: str) -> Path:
        return self.path / relpath

    def _put_image(self, image: np.ndarray, key: str | None = None) -> str:
        """Store `image` (once: the name is its content hash) and return its relative path."""
        key = key or _pixels_key(image)
        rel = self.store_relpath(key)
        target = self.path / rel
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            _atomic_write(target, _encode_png(image), durable=self.durable)
        return rel

    def _put_images(self, images: Sequence[tuple[np.ndarray, str]]) -> None:
        """Store many (image, key) at once: PNG encoding and fsync release the GIL, so a few threads overlap."""
        if len(images) <= 1:
            for image, key in images:
                self._put_image(image, key)
            return
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="workspace-store")
        list(self._pool.map(lambda item: self._put_image(*item), images))

    def read_image(self, relpath: str) -> np.ndarray:
        """Decode a stored image (uint8 RGB)."""
        from .images import load_image

        return load_image(self.path / relpath)

    def _iter_store_files(self) -> Iterator[Path]:
        if not self.images_path.is_dir():
            return
        for sub in os.scandir(self.images_path):
            if sub.is_dir():
                for entry in os.scandir(sub.path):
                    yield Path(entry.path)

    def _remove_dead_temp_files(self) -> int:
        """Delete temp files left by writers that are no longer running."""
        removed = 0
        for path in self._iter_store_files():
            if not path.name.startswith(TMP_PREFIX):
                continue
            try:
                pid = int(path.name[len(TMP_PREFIX):].split("-", 1)[0])
            except ValueError:
                pid = -1
            if pid > 0 and _pid_alive(pid):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        if removed:
            log.info("removed %d temp file(s) left by an interrupted writer", removed)
        return removed

    @contextlib.contextmanager
    def _journal(self, relpaths: Sequence[str], db: sqlite_utils.Database | None = None) -> Iterator[None]:
        """Journal files about to be written so a crash before their rows commit leaves no orphan behind.

        The caller writes the files inside the block and deletes the journal rows in its row transaction
        (``_unjournal``); if it fails, the journal rows stay and :meth:`gc` cleans up.
        """
        if relpaths:
            with self._session(db) as db, _write(db):
                db["pending_files"].insert_all(
                    ({"path": p, "pid": os.getpid(), "created_at": _now()} for p in relpaths)
                )
        yield

    @staticmethod
    def _unjournal(db: sqlite_utils.Database, relpaths: Sequence[str]) -> None:
        pid = os.getpid()
        for chunk_start in range(0, len(relpaths), 500):
            chunk = list(relpaths[chunk_start : chunk_start + 500])
            marks = ",".join("?" * len(chunk))
            db.execute(f"DELETE FROM pending_files WHERE pid = ? AND path IN ({marks})", [pid, *chunk])

    def gc(self) -> int:
        """Remove stored files that no row references (left by a crash) and temp files of dead writers.

        Files journalled by a live writer are kept. Returns the number of files removed.
        """
        removed = self._remove_dead_temp_files()
        files = [p for p in self._iter_store_files() if not p.name.startswith(TMP_PREFIX)]  # list BEFORE reading rows
        with self._session() as db:
            db.conn.execute("BEGIN")  # one snapshot for both reads
            referenced = set()
            for table, column in (("sources", "image_path"), ("generations", "path"), ("augmentations", "path"),
                                  ("augmentations", "fractal_path")):
                referenced.update(r[0] for r in db.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"))
            pending = db.execute("SELECT path, pid FROM pending_files").fetchall()
            db.conn.execute("COMMIT")
            live = {path for path, pid in pending if _pid_alive(pid)}
            dead_pids = {pid for _, pid in pending if not _pid_alive(pid)}
            for path in files:
                rel = path.relative_to(self.path).as_posix()
                if rel not in referenced and rel not in live:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed += 1
            if dead_pids:
                with _write(db):
                    for pid in dead_pids:
                        db.execute("DELETE FROM pending_files WHERE pid = ?", [pid])
        if removed:
            log.info("garbage-collected %d unreferenced file(s) in %s", removed, self.images_path)
        return removed

    # prompt library --------------------------------------------------------------------------------------
    def get_prompt_library(self) -> PromptLibrary:
        """The library in use (the paper's default if none was stored yet)."""
        from .prompts import DEFAULT_TEMPLATE, PromptEntry, PromptLibrary

        with self._session() as db:
            rows = list(db.query("SELECT text, enabled FROM prompts ORDER BY position"))
            template = db.execute("SELECT value FROM meta WHERE key = 'prompt_template'").fetchone()
        if not rows:
            return PromptLibrary.default()
        entries = [PromptEntry(text=r["text"], enabled=bool(r["enabled"])) for r in rows]
        return PromptLibrary(entries=entries, template=template[0] if template else DEFAULT_TEMPLATE)

    def set_prompt_library(self, library: PromptLibrary) -> None:
        """Store `library` as the library in use (validated first)."""
        library.validate()
        with self._session() as db, _write(db):
            db.execute("DELETE FROM prompts")
            db["prompts"].insert_all(
                {"position": i, "text": e.text, "enabled": int(e.enabled)} for i, e in enumerate(library.entries)
            )
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('prompt_template', ?)", [library.template])

    # single records (the app) ----------------------------------------------------------------------------
    def save_record(self, record: AugmentationRecord, *, status: str = "pending", template: str | None = None) -> int:
        """Store one record (I, Î, F and A plus its rows) and return the augmentation id.

        Saving the same record twice returns the same id. A record without a label is filed as ``unlabelled``.
        """
        status = _check_status(status)
        columns = _choice_columns(record)  # the label rule (None -> unlabelled) lives there, once
        original_key = _pixels_key(record.original)
        files = {
            "original": (self.store_relpath(original_key), record.original, original_key),
            "generated": (None, record.generated, None),
            "fractal": (None, record.fractal, None),
            "final": (None, record.final, None),
        }
        for name, (rel, image, key) in list(files.items()):
            key = key or _pixels_key(image)
            files[name] = (self.store_relpath(key), image, key)
        relpaths = [rel for rel, _, _ in files.values()]
        settings_key = dict(record.settings)
        cache_key = generation_cache_key(original_key, record.prompt_text, settings_key, record.seed)
        job_key = "app:" + hashlib.sha256(
            json.dumps({"final": files["final"][2], "choices": record.choices()}, sort_keys=True, default=str).encode()
        ).hexdigest()[:32]
        with self._journal(relpaths):
            self._put_images([(image, key) for _, image, key in files.values()])
            from .drift import drift_score

            drift = float(drift_score(record.original, record.generated))
            h, w = record.original.shape[:2]
            source_name = record.source or _upload_name(original_key)
            with self._session() as db, _write(db):
                db.execute(
                    "INSERT OR IGNORE INTO sources (path, label, sha256, pixels_sha256, width, height, image_path, "
                    "status, origin, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'ok', 'app', ?)",
                    [source_name, columns["label"], original_key, original_key, w, h, files["original"][0], _now()],
                )
                source_id = db.execute(
                    "SELECT id FROM sources WHERE path = ? AND sha256 = ?", [source_name, original_key]
                ).fetchone()[0]
                generation_id = self._insert_generation(
                    db,
                    source_id=source_id,
                    prompt=record.prompt,
                    prompt_text=record.prompt_text,
                    template=template,
                    seed=record.generation_seed,
                    requested_seed=record.seed,
                    settings_key=settings_key,
                    model=record.model,
                    is_test_model=record.is_test_model,
                    path=files["generated"][0],
                    drift=drift,
                    cache_key=cache_key,
                )
                row = {"source_id": source_id, "generation_id": generation_id, "job_key": job_key, "slot": None,
                       **columns, "fractal_path": files["fractal"][0], "path": files["final"][0],
                       "status": status, "drift": drift, "created_at": _now()}
                _insert_augmentation(db, row)
                self._unjournal(db, relpaths)
                return db.execute(
                    "SELECT id FROM augmentations WHERE source_id = ? AND job_key = ?", [source_id, job_key]
                ).fetchone()[0]

    @staticmethod
    def _insert_generation(db: sqlite_utils.Database, *, source_id: int, prompt: str, prompt_text: str,
                           template: str | None, seed: int, requested_seed: int, settings_key: dict, model: str,
                           is_test_model: bool, path: str, drift: float | None, cache_key: str) -> int:
        db.execute(
            "INSERT OR IGNORE INTO generations (source_id, prompt, prompt_text, template, seed, requested_seed, model, "
            "revision, steps, guidance_scale, image_guidance_scale, resolution, settings, is_test_model, path, drift, "
            "cache_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [source_id, prompt, prompt_text, template, int(seed), int(requested_seed), model,
             settings_key.get("revision"), settings_key.get("steps"), settings_key.get("guidance_scale"),
             settings_key.get("image_guidance_scale"), settings_key.get("resolution"),
             json.dumps(settings_key, sort_keys=True), int(bool(is_test_model)), path, drift, cache_key, _now()],
        )
        return db.execute("SELECT id FROM generations WHERE cache_key = ?", [cache_key]).fetchone()[0]

    def load_record(self, augmentation_id: int) -> AugmentationRecord:
        """Rebuild a record from the stored I, Î and F: mask and hybrid recomputed, no model call."""
        from .engine import AugmentationRecord
        from .masks import make_mask
        from .mixing import hybrid

        row = self.get_augmentation(augmentation_id)
        original = self.read_image(row["source_image_path"])
        generated = self.read_image(row["generation_path"])
        final = self.read_image(row["path"])
        h, w = original.shape[:2]
        mask = make_mask(row["mask"], h, w, feather=int(row["feather"]))
        fractal = self.read_image(row["fractal_path"]) if row.get("fractal_path") else None
        if fractal is None:
            raise WorkspaceError(f"augmentation {augmentation_id} has no stored fractal; it cannot be re-mixed.")
        return AugmentationRecord(
            original=original,
            generated=generated,
            mask=mask,
            hybrid=hybrid(original, generated, mask),
            fractal=fractal,
            final=final,
            prompt=row["prompt"],
            prompt_text=row["prompt_text"],
            mask_kind=row["mask"],
            fractal_id=row["fractal"],
            lam=float(row["lam"]),
            seed=int(row["seed"]),
            generation_seed=int(row["generation_seed"]),
            feather=int(row["feather"]),
            model=row["model"],
            settings=json.loads(row["settings"] or "{}"),
            is_test_model=bool(row["is_test_model"]),
            label=None if row["origin"] == "app" and row["label"] == UNLABELLED else row["label"],
            source=None if row["origin"] == "app" and row["source_path"] == _upload_name(row["pixels_sha256"])
            else row["source_path"],
        )

    # queries ---------------------------------------------------------------------------------------------
    _ROW_SQL = (
        "SELECT a.*, s.path AS source_path, s.image_path AS source_image_path, s.origin AS origin, "
        "s.width AS width, s.height AS height, g.path AS generation_path, g.prompt_text AS prompt_text, "
        "s.pixels_sha256 AS pixels_sha256, g.seed AS generation_seed, g.model AS model, g.settings AS settings, "
        "g.is_test_model AS is_test_model "
        "FROM augmentations a JOIN sources s ON s.id = a.source_id JOIN generations g ON g.id = a.generation_id"
    )

    def get_augmentation(self, augmentation_id: int) -> dict:
        """One augmentation row joined with its source and generation (paths relative to the workspace)."""
        with self._session() as db:
            rows = list(db.query(self._ROW_SQL + " WHERE a.id = ?", [int(augmentation_id)]))
        if not rows:
            raise WorkspaceError(
                f"no augmentation with id {augmentation_id} in '{self.path}'; list them with `status`."
            )
        return rows[0]

    @staticmethod
    def _where(*, label=None, prompt=None, status=None, max_drift=None, min_drift=None, ids=None,
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
            params.append(_check_status(status))
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
                           ids=None, order: str = "id", limit: int | None = None) -> list[dict]:
        """Augmentation rows (joined like :meth:`get_augmentation`); ``order="drift"`` puts the highest first."""
        orders = {"id": "a.id", "drift": "a.drift DESC, a.id"}
        if order not in orders:
            raise BadArgumentError(f"order must be one of {sorted(orders)}, got {order!r}.")
        where, params = self._where(label=label, prompt=prompt, status=status, max_drift=max_drift,
                                    min_drift=min_drift, ids=ids)
        sql = self._ROW_SQL + where + f" ORDER BY {orders[order]}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._session() as db:
            return list(db.query(sql, params))

    def set_status(self, ids: Iterable[int], status: str) -> int:
        """Set the status of the given augmentation ids; returns how many rows exist among them."""
        return self.review(status, ids=list(ids))

    def review(self, status: str, *, label=None, prompt=None, max_drift=None, min_drift=None, ids=None,
               current_status: str | None = None) -> int:
        """Bulk curation: set `status` on every augmentation that matches ALL the filters given (none: all).

        Returns the number of rows matched. Runs as one UPDATE in one transaction, so concurrent reviews from
        several threads or processes are serialised by SQLite and none is lost.
        """
        status = _check_status(status)
        where, params = self._where(label=label, prompt=prompt, status=current_status, max_drift=max_drift,
                                    min_drift=min_drift, ids=ids, prefix="")
        with self._session() as db, _write(db):
            cursor = db.execute(f"UPDATE augmentations SET status = ?, reviewed_at = ?{where}",
                                [status, _now(), *params])
            return cursor.rowcount

    def summary(self) -> dict:
        """Counts by status, label and prompt; failed sources with their reasons; totals."""
        with self._session() as db:
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
                "workspace": str(self.path),
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
        with self._session() as db:
            return list(db.query("SELECT * FROM exports ORDER BY id"))

    # export ----------------------------------------------------------------------------------------------
    def export(self, to: str | Path, *, status: str = "approved", include_originals: bool = False,
               make_zip: bool | str | Path = False, overwrite: bool = False, label: str | None = None,
               prompt: str | None = None, max_drift: float | None = None) -> ExportResult:
        """Write an ImageFolder-style copy of the selected augmentations into `to`.

        ``to/<label>/aug_<id>.png`` (label sanitised for the filesystem), ``to/metadata.csv`` (``file_name``
        relative to `to`, the original label text, prompt, mask, fractal, lam, seed, source, ...), and
        ``to/manifest.sqlite`` holding just the exported rows. ``include_originals`` adds each source once as
        ``to/<label>/orig_<source id>.png``. ``make_zip`` also writes ``<to>.zip`` (or the path given).
        """
        if status != "all":
            _check_status(status)
        target = self._prepare_export_dir(Path(to), overwrite=overwrite)
        zip_path = None
        if make_zip:
            zip_path = Path(target.parent / f"{target.name}.zip") if make_zip is True else Path(make_zip).resolve()
            if zip_path == target or target in zip_path.parents or self.path.resolve() in zip_path.parents:
                raise WorkspaceError(
                    f"zip path '{zip_path}' is inside the export folder or the workspace; choose a path outside both."
                )
        rows = self.list_augmentations(label=label, prompt=prompt, status=status, max_drift=max_drift)
        folders = _label_folders(r["label"] if r["label"] is not None else UNLABELLED for r in rows)
        records: list[dict] = []
        originals_done: dict[int, str] = {}
        for r in rows:
            folder = folders[r["label"] if r["label"] is not None else UNLABELLED]
            base = {"label": r["label"], "prompt": r["prompt"], "mask": r["mask"], "fractal": r["fractal"],
                    "lam": r["lam"], "seed": r["seed"], "source": r["source_path"]}
            dest = safe_join(target, folder, f"aug_{r['id']}.png")
            dest.parent.mkdir(exist_ok=True)
            shutil.copyfile(self.path / r["path"], dest)
            records.append({"file_name": f"{folder}/{dest.name}", **base, "kind": "augmented",
                            "augmentation_id": r["id"], "source_id": r["source_id"], "status": r["status"],
                            "drift": r["drift"], "prompt_text": r["prompt_text"], "model": r["model"]})
            if include_originals and r["source_id"] not in originals_done:
                odest = safe_join(target, folder, f"orig_{r['source_id']}.png")
                shutil.copyfile(self.path / r["source_image_path"], odest)
                originals_done[r["source_id"]] = f"{folder}/{odest.name}"
                records.append({"file_name": originals_done[r["source_id"]], "label": r["label"], "prompt": "",
                                "mask": "", "fractal": "", "lam": "", "seed": "", "source": r["source_path"],
                                "kind": "original", "augmentation_id": "", "source_id": r["source_id"],
                                "status": "", "drift": "", "prompt_text": "", "model": ""})
        columns = ["file_name", "label", "prompt", "mask", "fractal", "lam", "seed", "source", "kind",
                   "augmentation_id", "source_id", "status", "drift", "prompt_text", "model"]
        with open(safe_join(target, "metadata.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)
        self._write_export_manifest(target / MANIFEST_NAME, rows, records, status=status)
        if zip_path is not None:
            _zip_folder(target, zip_path)
        count = len(rows)
        filters = {"status": status, "label": label, "prompt": prompt, "max_drift": max_drift,
                   "include_originals": include_originals}
        with self._session() as db, _write(db):
            export_id = db["exports"].insert(
                {"created_at": _now(), "path": str(target), "zip_path": str(zip_path) if zip_path else None,
                 "count": count, "originals": len(originals_done), "status_filter": status,
                 "filters": json.dumps(filters, ensure_ascii=False)}
            ).last_pk
        log.info("exported %d augmentation(s) to %s", count, target)
        return ExportResult(path=target, count=count, zip_path=zip_path, originals=len(originals_done),
                            export_id=export_id)

    def _prepare_export_dir(self, to: Path, *, overwrite: bool) -> Path:
        """Validate the export target and make it ready (empty, or a previous export cleared with overwrite)."""
        if "\x00" in str(to):
            raise WorkspaceError(f"export path {str(to)!r} contains a NUL character; choose a plain folder path.")
        target = to.resolve()
        workspace = self.path.resolve()
        if target == workspace or workspace in target.parents or target in workspace.parents:
            raise WorkspaceError(
                f"export folder '{target}' overlaps the workspace '{workspace}'; export to a folder outside it."
            )
        if target.exists() and not target.is_dir():
            raise WorkspaceError(f"export target '{target}' is a file; pass a folder.")
        if target.exists() and any(target.iterdir()):
            if not overwrite:
                raise WorkspaceError(
                    f"export folder '{target}' is not empty; choose an empty folder or pass --overwrite."
                )
            _clear_previous_export(target)
        target.mkdir(parents=True, exist_ok=True)
        return target

    def _write_export_manifest(self, path: Path, rows: list[dict], records: list[dict], *, status: str) -> None:
        """A manifest.sqlite next to the export holding just its rows (and their sources and generations)."""
        ids = [r["id"] for r in rows]
        if path.exists():
            path.unlink()
        out = sqlite_utils.Database(sqlite3.connect(path))
        try:
            with self._session() as db:
                for table, key, values in (
                    ("augmentations", "id", ids),
                    ("sources", "id", sorted({r["source_id"] for r in rows})),
                    ("generations", "id", sorted({r["generation_id"] for r in rows})),
                ):
                    ddl = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", [table]).fetchone()[0]
                    out.execute(ddl)
                    for start in range(0, len(values), 500):
                        chunk = values[start : start + 500]
                        selected = db.query(
                            f"SELECT * FROM {table} WHERE {key} IN ({','.join('?' * len(chunk))})", chunk
                        )
                        out[table].insert_all(selected)
                prompts = list(db.query("SELECT * FROM prompts"))
            with out.atomic():
                out["augmentations"].add_column("file_name", str)
                files = {rec["augmentation_id"]: rec["file_name"] for rec in records if rec["kind"] == "augmented"}
                for aug_id, file_name in files.items():
                    out.execute("UPDATE augmentations SET file_name = ? WHERE id = ?", [file_name, aug_id])
                if prompts:
                    out["prompts"].insert_all(prompts, pk="position")
                out["export_info"].insert(
                    {"created_at": _now(), "workspace": str(self.path.resolve()), "status_filter": status,
                     "count": len(rows)}
                )
        finally:
            out.conn.close()


def _check_status(status: str) -> str:
    if status not in STATUSES:
        raise BadArgumentError(f"status must be one of {', '.join(STATUSES)}, got {status!r}.")
    return status


def _clear_previous_export(target: Path) -> None:
    """With --overwrite: remove the files a previous export wrote (listed in its metadata.csv)."""
    metadata = target / "metadata.csv"
    if not metadata.exists():
        return  # not one of ours: files with our names are replaced, others are left alone
    with open(metadata, newline="", encoding="utf-8") as f:
        names = [row.get("file_name", "") for row in csv.DictReader(f)]
    folders = set()
    for name in names:
        parts = Path(name).parts
        if len(parts) != 2:
            continue
        with contextlib.suppress(WorkspaceError, FileNotFoundError):
            safe_join(target, *parts).unlink()
            folders.add(parts[0])
    for folder in folders:
        with contextlib.suppress(OSError):
            (target / folder).rmdir()  # only if now empty
    for name in ("metadata.csv", MANIFEST_NAME):
        with contextlib.suppress(FileNotFoundError):
            (target / name).unlink()


def _zip_folder(folder: Path, zip_path: Path) -> None:
    """Zip `folder` as ``<folder name>/...`` into `zip_path`, atomically."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.parent / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}.zip"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs are already compressed
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
        os.replace(tmp, zip_path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# the bulk run ----------------------------------------------------------------------------------------------
@dataclass
class _Item:
    """One source image in the current batch, with the slots it still needs."""

    rel: str
    label: str
    sha256: str
    source_id: int | None
    image: np.ndarray
    pixels_key: str
    slots: list[tuple[str, int | None, Choice, str, str]]  # (job_key, slot, choice, prompt_text, cache_key)
    needs_source_row: bool


def run_augment(
    workspace: Workspace,
    train_dir: str | Path,
    *,
    per_image: int = 1,
    prompts: PromptLibrary | None = None,
    fractals: FractalLibrary | None = None,
    lam: float = 0.2,
    settings: GenerationSettings | None = None,
    batch_size: int = 4,
    seed: int = 0,
    all_prompts: bool = False,
    generator: Pix2PixGenerator | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    feather: int = 0,
) -> RunSummary:
    """Augment every image of ``train_dir/<class>/`` `per_image` times into `workspace`, resuming what exists.

    ``progress(done, total)`` is called after every batch (images); ``cancel.is_set()`` stops cleanly between
    batches (everything finished so far is committed). Bad images are recorded as failed sources and the run
    goes on. Raises BadArgumentError for bad arguments or a train dir without images.
    """
    from .engine import DiffuseMix, check_seed
    from .mixing import check_lam
    from .generation import GenerationSettings, Pix2PixGenerator

    if isinstance(per_image, bool) or int(per_image) != per_image or per_image < 1:
        raise BadArgumentError(f"per_image must be an integer >= 1, got {per_image!r}.")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise BadArgumentError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    lam = check_lam(lam)
    seed = check_seed(seed)
    files = scan_train_dir(train_dir)
    if not files:
        raise BadArgumentError(
            f"no image files found in '{train_dir}'; the layout is DIR/<class>/<image> with extensions such as "
            ".png/.jpg."
        )
    library = prompts if prompts is not None else workspace.get_prompt_library()
    workspace.set_prompt_library(library)  # validates; records the library in use
    if generator is None:
        generator = Pix2PixGenerator(settings or GenerationSettings())
    engine = DiffuseMix(prompts=library, fractals=fractals, lam=lam, seed=seed, feather=feather, generator=generator)
    settings_key = generator.settings.cache_key()
    fixed_prompts = library.enabled() if all_prompts else None
    jobs = _job_keys(per_image, fixed_prompts)
    workspace.gc()  # files of a killed run that never got their rows

    started = time.perf_counter()
    summary = RunSummary(run_id=0, images_total=len(files))
    args = {"per_image": per_image, "all_prompts": all_prompts, "seed": seed, "lam": lam, "feather": feather,
            "batch_size": batch_size, "settings": settings_key, "prompts": library.to_dict(),
            "fractals": getattr(engine.fractals, "origin", "")}
    with workspace._session() as db, _write(db):
        summary.run_id = db["runs"].insert(
            {"started_at": _now(), "train_dir": str(Path(train_dir).resolve()),
             "args": json.dumps(args, ensure_ascii=False), "images_total": len(files)}
        ).last_pk
    _warn_if_settings_changed(workspace, summary.run_id, args)
    state = {"loaded": False}
    done = 0
    if progress is not None:
        progress(0, len(files))
    db = workspace.db()  # one connection for the whole run (closing the last one checkpoints the WAL)
    try:
        for start in range(0, len(files), batch_size):
            if cancel is not None and cancel.is_set():
                summary.cancelled = True
                log.info("run cancelled after %d of %d images", done, len(files))
                break
            batch = files[start : start + batch_size]
            _run_batch(db, workspace, engine, Path(train_dir), batch, jobs, seed=seed, lam=lam,
                       settings_key=settings_key, batch_size=batch_size, summary=summary, state=state)
            done += len(batch)
            if progress is not None:
                progress(done, len(files))
    finally:
        try:
            with _write(db):
                db["runs"].update(summary.run_id, {
                    "finished_at": _now(), "images_failed": summary.images_failed,
                    "augmentations_added": summary.augmentations_added,
                    "generations_added": summary.generations_added,
                    "generations_reused": summary.generations_reused, "cancelled": int(summary.cancelled)})
        finally:
            db.conn.close()
            summary.seconds = time.perf_counter() - started
    return summary


def _warn_if_settings_changed(workspace: Workspace, run_id: int, args: dict) -> None:
    """Existing slots are never redone: say so when a run's settings differ from the previous run's."""
    with workspace._session() as db:
        previous = db.execute("SELECT args FROM runs WHERE id < ? ORDER BY id DESC LIMIT 1", [run_id]).fetchone()
    if previous is None:
        return
    old = json.loads(previous[0] or "{}")
    changed = sorted(k for k in ("seed", "lam", "feather", "settings", "prompts", "fractals", "all_prompts")
                     if old.get(k) != args.get(k))
    if changed:
        log.warning(
            "this run's %s differ from the previous run's: augmentations already in the workspace are kept as they "
            "are and only missing slots use the new values (use a new workspace to redo everything)",
            ", ".join(changed),
        )


def _run_batch(db: sqlite_utils.Database, workspace: Workspace, engine: DiffuseMix, train_dir: Path,
               batch: list[tuple[str, str]], jobs: list[tuple[str, int | None, str | None]], *, seed: int, lam: float,
               settings_key: dict, batch_size: int, summary: RunSummary, state: dict) -> None:
    """Decode, draw, generate (what is not cached), mix, store and commit one batch of source files."""
    from .drift import drift_score
    from .generation import GenerationRequest
    from .images import load_image

    items: list[_Item] = []
    failed_rows: list[dict] = []
    with workspace._session(db) as db:
        for rel, label in batch:
            path = train_dir / rel
            try:
                sha = _sha256_file(path)
            except OSError as exc:
                summary.images_failed += 1
                summary.failures.append((rel, f"cannot read the file ({exc.strerror or exc})"))
                continue
            row = db.execute("SELECT id, status, error FROM sources WHERE path = ? AND sha256 = ?",
                             [rel, sha]).fetchone()
            if row is not None and row[1] == "failed":
                summary.images_failed += 1
                summary.failures.append((rel, row[2]))
                continue
            existing = set()
            if row is not None:
                existing = {r[0] for r in db.execute("SELECT job_key FROM augmentations WHERE source_id = ?", [row[0]])}
            missing = [job for job in jobs if job[0] not in existing]
            if not missing:
                summary.images_skipped += 1
                continue
            try:
                image = load_image(path)
            except BadImageError as exc:
                summary.images_failed += 1
                summary.failures.append((rel, exc.reason))
                failed_rows.append({"path": rel, "label": label, "sha256": sha, "status": "failed",
                                    "error": exc.reason, "created_at": _now()})
                continue
            pixels_key = _pixels_key(image)
            slots = []
            for job_key, slot, fixed_prompt in missing:
                choice = engine.sample(_slot_rng(seed, sha, job_key), 1, prompt=fixed_prompt)[0]
                prompt_text = engine.prompts.render(choice.prompt)
                gkey = generation_cache_key(pixels_key, prompt_text, settings_key, choice.seed)
                slots.append((job_key, slot, choice, prompt_text, gkey))
            items.append(_Item(rel=rel, label=label, sha256=sha, source_id=row[0] if row else None, image=image,
                               pixels_key=pixels_key, slots=slots, needs_source_row=row is None))

        # which Î exist already? -------------------------------------------------------------------------
        wanted: dict[str, tuple[_Item, Choice, str]] = {}
        for item in items:
            for _, _, choice, prompt_text, gkey in item.slots:
                wanted.setdefault(gkey, (item, choice, prompt_text))
        cached: dict[str, dict] = {}
        keys = list(wanted)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            for r in db.query(f"SELECT * FROM generations WHERE cache_key IN ({','.join('?' * len(chunk))})", chunk):
                cached[r["cache_key"]] = r

    generated: dict[str, np.ndarray] = {}
    new_generations: dict[str, dict] = {}
    for key, row in cached.items():
        generated[key] = workspace.read_image(row["path"])
    summary.generations_reused += len(cached)
    to_make = [key for key in wanted if key not in cached]
    if to_make:
        generator = engine.generator
        if not state["loaded"]:
            t0 = time.perf_counter()
            generator.load()
            summary.load_seconds += time.perf_counter() - t0
            state["loaded"] = True
        requests = [
            GenerationRequest(image=wanted[k][0].image, image_key=wanted[k][0].pixels_key,
                              prompt_text=wanted[k][2], seed=wanted[k][1].seed)
            for k in to_make
        ]
        t0 = time.perf_counter()
        results = _generate(generator, requests, batch_size=batch_size, names=[wanted[k][0].rel for k in to_make],
                            summary=summary)
        summary.model_seconds += time.perf_counter() - t0
        for key, result in zip(to_make, results):
            if result is None:
                continue
            item, choice, prompt_text = wanted[key]
            generated[key] = result.image
            new_generations[key] = {
                "image": result.image, "seed": result.seed, "requested_seed": choice.seed, "item": item,
                "prompt": choice.prompt, "prompt_text": prompt_text,
                "drift": float(drift_score(item.image, result.image)),
            }

    # mix and store ---------------------------------------------------------------------------------------
    pending_files: list[tuple[str, np.ndarray, str]] = []  # (relpath, image, key)
    aug_rows: list[tuple[_Item, dict]] = []
    for item in items:
        if item.needs_source_row:
            pending_files.append((workspace.store_relpath(item.pixels_key), item.image, item.pixels_key))
        for job_key, slot, choice, _, gkey in item.slots:
            if gkey not in generated:
                continue  # its generation failed; the slot stays missing and is retried next run
            made = new_generations.get(gkey) or cached[gkey]
            record = engine.compose(item.image, generated[gkey], choice, generation_seed=made["seed"], lam=lam,
                                    label=item.label, source=item.rel)
            final_key, fractal_key = _pixels_key(record.final), _pixels_key(record.fractal)
            pending_files.append((workspace.store_relpath(final_key), record.final, final_key))
            pending_files.append((workspace.store_relpath(fractal_key), record.fractal, fractal_key))
            aug_rows.append((item, {
                "generation_key": gkey, "job_key": job_key, "slot": slot, **_choice_columns(record),
                "fractal_path": workspace.store_relpath(fractal_key), "path": workspace.store_relpath(final_key),
                "status": "pending", "drift": made["drift"], "run_id": summary.run_id, "created_at": _now()}))
    for key, gen in new_generations.items():
        gkey_px = _pixels_key(gen["image"])
        gen["path"] = workspace.store_relpath(gkey_px)
        pending_files.append((gen["path"], gen["image"], gkey_px))

    relpaths = sorted({rel for rel, _, _ in pending_files})
    with workspace._journal(relpaths, db):
        unique = {rel: (image, key) for rel, image, key in pending_files}
        workspace._put_images(list(unique.values()))
        with _write(db):
            for frow in failed_rows:
                db.execute("DELETE FROM sources WHERE path = ? AND status = 'failed'", [frow["path"]])
                db["sources"].insert(frow, ignore=True)
            for item in items:
                if item.needs_source_row:
                    db.execute("DELETE FROM sources WHERE path = ? AND status = 'failed'", [item.rel])
                    h, w = item.image.shape[:2]
                    db.execute(
                        "INSERT OR IGNORE INTO sources (path, label, sha256, pixels_sha256, width, height, image_path, "
                        "status, origin, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'ok', 'dataset', ?)",
                        [item.rel, item.label, item.sha256, item.pixels_key, w, h,
                         workspace.store_relpath(item.pixels_key), _now()],
                    )
                    item.source_id = db.execute("SELECT id FROM sources WHERE path = ? AND sha256 = ?",
                                                [item.rel, item.sha256]).fetchone()[0]
            generation_ids = {key: row["id"] for key, row in cached.items()}
            for key, gen in new_generations.items():
                generation_ids[key] = workspace._insert_generation(
                    db, source_id=gen["item"].source_id, prompt=gen["prompt"], prompt_text=gen["prompt_text"],
                    template=engine.prompts.template, seed=gen["seed"], requested_seed=gen["requested_seed"],
                    settings_key=settings_key, model=settings_key.get("model", engine.settings.model),
                    is_test_model=engine.generator.is_test_model, path=gen["path"], drift=gen["drift"],
                    cache_key=key,
                )
            added = 0
            for item, row in aug_rows:
                row = dict(row, source_id=item.source_id, generation_id=generation_ids[row.pop("generation_key")])
                added += _insert_augmentation(db, row)
            workspace._unjournal(db, relpaths)
    summary.images_processed += len(items)
    summary.generations_added += len(new_generations)
    summary.augmentations_added += added


def _generate(generator: Pix2PixGenerator, requests: list, *, batch_size: int, names: list[str],
              summary: RunSummary) -> list:
    """Generate in one batched call; if it fails on one request, retry one by one and skip the failures."""
    try:
        return generator.generate(requests, batch_size=batch_size)
    except (ModelUnavailableError, BadArgumentError):
        raise
    except DiffuseMixError as exc:  # a degenerate output after its retries
        log.warning("a generation in this batch failed (%s); retrying its requests one by one", exc)
    results = []
    for request, name in zip(requests, names):
        try:
            results.append(generator.generate([request], batch_size=1)[0])
        except (ModelUnavailableError, BadArgumentError):
            raise
        except DiffuseMixError as exc:
            summary.failures.append((name, f"generation failed ({exc}); it is retried on the next run"))
            results.append(None)
    return results
