"""The manifest's schema (``W/manifest.sqlite``) as SQL, and how an older file is brought up to it.

Tables, in the order rows depend on each other: ``sources`` -> ``generations`` -> ``augmentations``; ``reviews``
and ``review_batches`` for every decision (decisions.py); ``prompts``, ``meta``, ``exports``, ``runs``;
``pending_files``, the crash journal (manifest.py); ``scorers`` and ``scores`` for curation; ``prompt_gains``
(what training measured per prompt). Each column says what
it holds; docs/workspace.md describes them for readers of the file.

:func:`is_current` tells whether a file needs anything; :func:`create_or_migrate` runs inside the caller's write
transaction (``Manifest.create_or_migrate``): the migrations from older versions, then the ``CREATE ... IF NOT
EXISTS`` of every table and index, then the version. A migration changes nothing but the schema: the rows stay.
"""

from __future__ import annotations

import sqlite_utils

__all__ = ["SCHEMA_VERSION", "create_or_migrate", "is_current", "stored_version"]

SCHEMA_VERSION = "2"

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
    # image embeddings of the label scorer (curation/embeddings.py): float16 little-endian vectors, one row per image
    """CREATE TABLE IF NOT EXISTS embeddings (
        target TEXT NOT NULL CHECK (target IN ('source', 'generation', 'augmentation')),  -- I, Î or A
        target_id INTEGER NOT NULL,      -- sources.id, generations.id or augmentations.id
        scorer_id INTEGER NOT NULL REFERENCES scorers(id),  -- the label scorer (CLIP) that embedded it
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,            -- dim float16 values (numpy '<f2'), L2-normalised before rounding
        UNIQUE (scorer_id, target, target_id)
    )""",
    # the map (curation/embedding_map.py): 2-D coordinates of the augmentations' embeddings, per label scorer
    """CREATE TABLE IF NOT EXISTS map_points (
        scorer_id INTEGER NOT NULL REFERENCES scorers(id),
        augmentation_id INTEGER NOT NULL,
        x REAL NOT NULL,
        y REAL NOT NULL,
        PRIMARY KEY (scorer_id, augmentation_id)
    ) WITHOUT ROWID""",
    # prompt gains measured by training (`train --per-prompt`, prompt_gains.py): one row per prompt and run
    """CREATE TABLE IF NOT EXISTS prompt_gains (
        id INTEGER PRIMARY KEY,
        prompt TEXT NOT NULL,            -- the prompt's text, as in prompts.text and augmentations.prompt
        kind TEXT NOT NULL DEFAULT 'alone',  -- 'alone': its arm vs baseline; 'leave-one-out': online vs without it
        gain REAL NOT NULL,              -- mean gain of final validation top-1, in points, paired by seed
        low REAL,                        -- its 95% t interval (NULL with one seed)
        high REAL,
        repeats INTEGER NOT NULL,        -- seeds
        model TEXT NOT NULL,
        epochs INTEGER NOT NULL,
        settings TEXT,                   -- JSON: size, p, lam, status, first seed, validation folder, output folder
        created_at TEXT NOT NULL
    )""",
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
    "CREATE INDEX IF NOT EXISTS idx_prompt_gains_prompt ON prompt_gains(prompt, kind)",
]


def stored_version(db: sqlite_utils.Database) -> str | None:
    """The schema version the file records (None for a new file or one without ``meta``)."""
    if "meta" not in db.table_names():
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return row[0] if row else None


def is_current(db: sqlite_utils.Database) -> bool:
    """Whether the file holds every table at SCHEMA_VERSION (then opening it writes nothing)."""
    return set(_TABLES) <= set(db.table_names()) and stored_version(db) == SCHEMA_VERSION


def create_or_migrate(db: sqlite_utils.Database) -> None:
    """Inside the caller's write transaction: migrate an older file, create what is missing, record the version."""
    if stored_version(db) == "1":
        _migrate_1_to_2(db)
    for statement in SCHEMA + INDEXES:
        db.execute(statement)
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", [SCHEMA_VERSION])


def _migrate_1_to_2(db: sqlite_utils.Database) -> None:
    """Schema 1 → 2 inside the caller's transaction: A no longer has to be stored (``path`` may be NULL), and
    augmentations get ``remixed_from``. SQLite's documented way: new table, copy, drop, rename, re-index."""
    old_columns = [r[1] for r in db.execute("PRAGMA table_info(augmentations)")]
    db.execute(AUGMENTATIONS_DDL.replace("CREATE TABLE IF NOT EXISTS augmentations", "CREATE TABLE augmentations_v2"))
    columns = ", ".join(old_columns)
    db.execute(f"INSERT INTO augmentations_v2 ({columns}) SELECT {columns} FROM augmentations")
    db.execute("DROP TABLE augmentations")
    db.execute("ALTER TABLE augmentations_v2 RENAME TO augmentations")
