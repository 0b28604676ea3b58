"""One augmentation record in the workspace and back: store it (the app's path), or rebuild it from its row.

:func:`save_record` writes I, Î and the fractal into the store (journalled first, as the bulk run does) and the
source, generation and augmentation rows in one transaction, then records the decision. :func:`record_from_row`
rebuilds the :class:`engine.AugmentationRecord` of a manifest row from the stored I, Î and fractal: M, H, F and A
are composed again (``engine.mix``), no model is called. :func:`final_image` is A alone (what an export writes and a
gallery shows).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import numpy as np

from ..errors import WorkspaceError
from .decisions import decide
from .labels import UNLABELLED
from .manifest import Manifest, check_status, generation_cache_key, write
from .store import ImageStore

if TYPE_CHECKING:
    from ..engine.diffusemix import AugmentationRecord

__all__ = ["final_image", "record_from_row", "save_record", "upload_name"]


def upload_name(pixels_key: str) -> str:
    """The source name of an app record that came without one."""
    return f"upload:{pixels_key[:16]}"


def save_record(manifest: Manifest, store: ImageStore, record: AugmentationRecord, *, status: str = "pending",
                origin: str = "app", remixed_from: int | None = None) -> int:
    """Store one record (I, Î, F and its rows), record the decision `status`, and return the augmentation id.

    Saving the same record again returns the same id; a different status on a second save is a new decision
    (the last one wins, and both are in the history).
    """
    status = check_status(status)
    original_rel, original_png = store.encode(record.original)
    generated_rel, generated_png = store.encode(record.generated)
    fractal_rel, fractal_png = store.encode(record.fractal)
    files = {original_rel: original_png, generated_rel: generated_png, fractal_rel: fractal_png}
    pixels = original_rel.rsplit("/", 1)[1][:-4]
    cache_key = generation_cache_key(pixels, record.prompt_text, dict(record.settings), record.requested_seed)
    choices = {k: v for k, v in record.choices().items() if k not in ("drift",)}
    job_key = "app:" + hashlib.sha256(json.dumps(
        {"generated": generated_rel, "fractal": fractal_rel, "choices": choices}, sort_keys=True, default=str
    ).encode()).hexdigest()[:32]
    source_name = record.source or upload_name(pixels)
    relpaths = sorted(files)
    manifest.journal(relpaths)
    store.put_many(list(files.items()))
    h, w = record.original.shape[:2]
    with manifest.session() as db:
        with write(db):
            source_id = manifest.insert_source(
                db, path=source_name, label=record.label, sha256=pixels, pixels_sha256=pixels, width=w, height=h,
                image_path=original_rel, origin="app")
            generation_id = manifest.insert_generation(db, record, source_id=source_id, cache_key=cache_key,
                                                       path=generated_rel)
            aug_id, _ = manifest.insert_augmentation(
                db, record, source_id=source_id, generation_id=generation_id, job_key=job_key, slot=None,
                fractal_path=fractal_rel, status="pending", remixed_from=remixed_from)
            manifest.unjournal(db, relpaths)
        decide(manifest, status, origin=origin, ids=[aug_id], db=db)
    return aug_id


def record_from_row(store: ImageStore, row: dict) -> AugmentationRecord:
    """The record of a row of ``Manifest.list_augmentations`` / ``get_augmentation``, composed from the store."""
    from ..engine.diffusemix import AugmentationRecord, mix

    original = store.read(row["source_image_path"])
    generated = store.read(row["generation_path"])
    if not row.get("fractal_path"):
        raise WorkspaceError(f"augmentation {row['id']} has no stored fractal; it cannot be composed.")
    fractal_source = store.read(row["fractal_path"])
    mask, hyb, frac, final = mix(original, generated, fractal_source, mask_kind=row["mask"],
                                 lam=float(row["lam"]), feather=int(row["feather"]))
    app_source = row["origin"] == "app"
    return AugmentationRecord(
        original=original, generated=generated, mask=mask, hybrid=hyb, fractal=frac, final=final,
        prompt=row["prompt"], prompt_text=row["prompt_text"], template=row["template"] or "",
        mask_kind=row["mask"], fractal_id=row["fractal"], lam=float(row["lam"]), feather=int(row["feather"]),
        requested_seed=int(row["seed"]), used_seed=int(row["used_seed"]), model=row["model"],
        settings=json.loads(row["settings"] or "{}"), is_test_model=bool(row["is_test_model"]),
        drift=row["drift"],
        label=None if app_source and row["label"] == UNLABELLED else row["label"],
        source=None if app_source and row["source_path"] == upload_name(row["pixels_sha256"])
        else row["source_path"],
    )


def final_image(store: ImageStore, row: dict) -> np.ndarray:
    """A of one augmentation row: the stored file when the row has one (schema 1), else composed."""
    if row.get("path"):
        return store.read(row["path"])
    return record_from_row(store, row).final
