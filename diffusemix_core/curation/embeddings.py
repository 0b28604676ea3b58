"""The label scorer's image embeddings of I, Î and A, stored once in the workspace and read by the probe and the map.

The CLIP scorer embeds every image it scores (``label_scorer.LabelScorer.image_embeddings``); the ``score``
command and the bulk run's scores stage keep those vectors, so nothing is embedded twice. Storage: the
``embeddings`` table (``schema.py``), one row per (label scorer, target, image), the vector as float16 bytes
(a ViT-B/32 vector is 512 values = 1 KiB). A table, not an array file per run, because the rows are written in the
same transaction as the scores (a killed run leaves both or neither), a rerun finds what is missing with the same
kind of query. Measured (``bench/curate.py``, 2 shared CPU cores, 512-d): 10k vectors are 13 MiB and read back in
0.5 s (a ``.npy`` file: 10 MiB, 0.03 s); 100k project to 133 MiB and about 5 s, once per map or probe, which are
cached. The file would be faster to read but needs its own journal, index and clean-up.

Targets: ``source`` (I, for the probe trained on the user's labelled images), ``generation`` (Î) and
``augmentation`` (A, for the map and the probe's scores).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["SOURCE", "INSERT_EMBEDDING", "decode", "embedding_rows", "read_embeddings", "has_embeddings"]

SOURCE = "source"
DTYPE = np.dtype("<f2")
INSERT_EMBEDDING = ("INSERT OR IGNORE INTO embeddings (target, target_id, scorer_id, dim, vector) "
                    "VALUES (?, ?, ?, ?, ?)")


def encode(vector: np.ndarray) -> bytes:
    """One vector as float16 little-endian bytes."""
    return np.asarray(vector, dtype=np.float32).astype(DTYPE).tobytes()


def decode(blobs: Iterable[bytes], dim: int) -> np.ndarray:
    """(n, dim) float32 from float16 blobs (one ``frombuffer`` over the joined bytes)."""
    joined = b"".join(blobs)
    return np.frombuffer(joined, dtype=DTYPE).reshape(-1, dim).astype(np.float32)


def embedding_rows(target: str, ids: Iterable[int], scorer_id: int, vectors: np.ndarray) -> list[tuple]:
    """Rows for :data:`INSERT_EMBEDDING` of `vectors` (n, d), one per id."""
    vectors = np.asarray(vectors)
    return [(target, int(i), int(scorer_id), int(vectors.shape[1]), encode(v)) for i, v in zip(ids, vectors)]


def read_embeddings(workspace: Workspace, scorer_id: int, target: str, *, ids: Iterable[int] | None = None,
                    db=None) -> tuple[np.ndarray, np.ndarray]:
    """(ids in id order, (n, d) float32 vectors) of `target` images embedded by label scorer `scorer_id`."""
    sql = "SELECT target_id, dim, vector FROM embeddings WHERE scorer_id = ? AND target = ?"
    params: list = [int(scorer_id), target]
    if ids is not None:
        ids = sorted({int(i) for i in ids})
        sql += f" AND target_id IN ({','.join('?' * len(ids))})" if ids else " AND 0"
        params += ids
    with workspace.manifest.session(db) as db:
        rows = db.execute(sql + " ORDER BY target_id", params).fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return np.array([r[0] for r in rows], dtype=np.int64), decode((r[2] for r in rows), rows[0][1])


def has_embeddings(scorer_id: int | None, target: str, alias: str) -> str:
    """SQL: whether the row `alias` of `target` has an embedding from `scorer_id`."""
    return (f"EXISTS (SELECT 1 FROM embeddings e WHERE e.scorer_id = {int(-1 if scorer_id is None else scorer_id)} "
            f"AND e.target = '{target}' AND e.target_id = {alias}.id)")
