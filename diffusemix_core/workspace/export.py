"""Export: the selected augmentations as an ImageFolder dataset with metadata.csv and a manifest, optionally zipped.

Layout (docs/workspace.md, "Export layout")::

    DIR/<label>/aug_<id>.png         A, torchvision ImageFolder layout (labels made safe for the filesystem)
    DIR/<label>/orig_<source>.png    with include_originals: each source once
    DIR/metadata.csv                 file_name relative to DIR + every choice (Hugging Face imagefolder)
    DIR/manifest.sqlite              just the exported rows, their sources, generations and the prompts
    DIR.zip                          with make_zip: the same tree under a top folder DIR/

A is composed from the stored I, Î and fractal (``records.final_image``) and encoded with the store's PNG
settings, so exporting the same workspace twice gives the same bytes. Composition runs in a few threads (decoding,
mixing and zlib release the GIL). Every file is written inside DIR (``files.safe_join``).

DIR is complete or absent: the export is written into a temp folder beside it (``.tmp-<pid>-<hex>``) and renamed
into place at the end, so a killed or failed export leaves no partial DIR that would block the next one. With
``--overwrite`` the previous export is replaced only once the new one is complete; files in DIR that are not an
export's are left where they are. The zip is written atomically too. Temp folders and zips of a killed export are
removed by the next export into the same place and by ``check --fix``.

Labels become folder names through ``labels.label_folders``; labels that collide (the same text in two Unicode
forms, or two labels that would share a folder) are listed in ``ExportResult.notes``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import shutil
import sqlite3
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from ..engine.images import encode_png
from ..errors import WorkspaceError
from .files import atomic_target, dead_temp_files, remove_dead_temp_files, safe_join, temp_path
from .labels import UNLABELLED, label_folders
from .manifest import MANIFEST_NAME, Manifest, check_status, now, write
from .records import final_image
from .store import PNG_COMPRESS_LEVEL, ImageStore

__all__ = ["ExportResult", "METADATA_COLUMNS", "dead_export_temps", "export_workspace"]

log = logging.getLogger(__name__)

METADATA_COLUMNS = ["file_name", "label", "prompt", "mask", "fractal", "lam", "seed", "source", "kind",
                    "augmentation_id", "source_id", "status", "drift", "prompt_text", "model"]
_WORKERS = max(1, min(4, os.cpu_count() or 1))
# meta keys: the folders an export writes temp folders and temp zips into (for clean-up); the name is the one
# earlier versions wrote for zips only
_FOLDER_KEY = "export-zip-folder:"


@dataclass
class ExportResult:
    path: Path
    count: int
    zip_path: Path | None = None
    originals: int = 0
    export_id: int | None = None
    notes: list[str] = field(default_factory=list)  # labels that collided and how their folders were named


def export_workspace(manifest: Manifest, store: ImageStore, to: str | Path, *, status: str = "approved",
                     include_originals: bool = False, make_zip: bool | str | Path = False, overwrite: bool = False,
                     label: str | None = None, prompt: str | None = None,
                     max_drift: float | None = None, purpose: str = "user") -> ExportResult:
    """Write the augmentations of the workspace (`manifest` and `store`) that match the filters into `to`.
    `purpose` "training" marks the export arm of ``train`` (recorded, but not counted as a user's export)."""
    if status != "all":
        check_status(status)
    workspace = store.root.resolve()
    target = _check_export_dir(workspace, Path(to), overwrite=overwrite)
    zip_path = None
    if make_zip:
        zip_path = Path(target.parent / f"{target.name}.zip") if make_zip is True else Path(make_zip).resolve()
        if zip_path == target or target in zip_path.parents or workspace in zip_path.parents:
            raise WorkspaceError(
                f"zip path '{zip_path}' is inside the export folder or the workspace; choose a path outside both."
            )
    rows = manifest.list_augmentations(label=label, prompt=prompt, status=status, max_drift=max_drift)
    folders = label_folders(r["label"] if r["label"] is not None else UNLABELLED for r in rows)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remember_temp_folder(manifest, target.parent)
    remove_dead_temp_files(target.parent.iterdir())
    _remove_dead_temp_folders(target.parent)
    building = temp_path(target)
    building.mkdir()
    try:
        records, originals = _write_files(store, building, rows, folders, include_originals=include_originals,
                                          scores=_score_columns(manifest, {r["id"] for r in rows}))
        _write_export_manifest(manifest, workspace.name, building / MANIFEST_NAME, rows, records, status=status)
        _publish(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    if zip_path is not None:
        _remember_temp_folder(manifest, zip_path.parent.resolve())
        _zip_folder(target, zip_path)
    filters = {"status": status, "label": label, "prompt": prompt, "max_drift": max_drift,
               "include_originals": include_originals, "purpose": purpose}
    with manifest.session() as db, write(db):
        export_id = db["exports"].insert(
            {"created_at": now(), "path": str(target), "zip_path": str(zip_path) if zip_path else None,
             "count": len(rows), "originals": originals, "status_filter": status,
             "filters": json.dumps(filters, ensure_ascii=False)}
        ).last_pk
    log.info("exported %d augmentation(s) to %s", len(rows), target)
    for note in folders.notes():
        log.warning("%s", note)
    return ExportResult(path=target, count=len(rows), zip_path=zip_path, originals=originals,
                        export_id=export_id, notes=folders.notes())


def _score_columns(manifest: Manifest, ids: set[int]) -> tuple[list[str], dict[int, dict]]:
    """The scores and flags of the exported A (and their Î: ``generated_*``) by the latest scorer of each kind, as
    metadata.csv columns, one per metric: (column names, {augmentation id: {column: value}}). Flags are their
    names ('' = clean); ``top_class`` and ``probe_class`` are the classes CLIP and the probe put on top."""
    columns: list[str] = []
    values: dict[int, dict] = {}
    texts = {"flags": "flags", "top_prob": "top_class", "probe_prob": "probe_class"}
    with manifest.session() as db:
        for kind in ("label", "quality", "probe"):
            row = db.execute("SELECT max(id) FROM scorers WHERE kind = ?", [kind]).fetchone()
            if row is None or row[0] is None:
                continue
            for target, key, prefix in (("augmentation", "a.id", ""), ("generation", "a.generation_id", "generated_")):
                for aug_id, metric, value, text in db.execute(
                        f"SELECT a.id, x.metric, x.value, x.text FROM augmentations a JOIN scores x ON x.target = ? "
                        f"AND x.target_id = {key} AND x.scorer_id = ? ORDER BY x.metric", [target, row[0]]):
                    if aug_id not in ids:
                        continue
                    mine = values.setdefault(aug_id, {})
                    if metric == "flags":
                        mine[prefix + metric] = text or ""
                    else:
                        mine[prefix + metric] = value
                        if metric in texts:
                            mine[prefix + texts[metric]] = text
    for mine in values.values():
        columns.extend(c for c in mine if c not in columns)
    return sorted(columns, key=lambda c: (c.startswith("generated_"), c)), values


def _write_files(store: ImageStore, out: Path, rows: list[dict], folders, *, include_originals: bool,
                 scores: tuple[list[str], dict[int, dict]] = ([], {})) -> tuple[list[dict], int]:
    """Every A (and with include_originals each source once) under `out`; returns (metadata rows, originals)."""
    score_columns, score_values = scores
    records: list[dict] = []
    jobs: list[tuple[Path, dict]] = []
    originals_done: dict[int, str] = {}
    for r in rows:
        folder = folders[r["label"] if r["label"] is not None else UNLABELLED]
        dest = safe_join(out, folder, f"aug_{r['id']}.png")
        jobs.append((dest, r))
        records.append({"file_name": f"{folder}/{dest.name}", "label": r["label"], "prompt": r["prompt"],
                        "mask": r["mask"], "fractal": r["fractal"], "lam": r["lam"], "seed": r["seed"],
                        "source": r["source_path"], "kind": "augmented", "augmentation_id": r["id"],
                        "source_id": r["source_id"], "status": r["status"], "drift": r["drift"],
                        "prompt_text": r["prompt_text"], "model": r["model"],
                        **{c: score_values.get(r["id"], {}).get(c, "") for c in score_columns}})
        if include_originals and r["source_id"] not in originals_done:
            odest = safe_join(out, folder, f"orig_{r['source_id']}.png")
            odest.parent.mkdir(exist_ok=True)
            odest.write_bytes(store.read_bytes(r["source_image_path"]))
            originals_done[r["source_id"]] = f"{folder}/{odest.name}"
            records.append({"file_name": originals_done[r["source_id"]], "label": r["label"], "prompt": "",
                            "mask": "", "fractal": "", "lam": "", "seed": "", "source": r["source_path"],
                            "kind": "original", "augmentation_id": "", "source_id": r["source_id"], "status": "",
                            "drift": "", "prompt_text": "", "model": "", **{c: "" for c in score_columns}})

    def write_final(job: tuple[Path, dict]) -> None:
        dest, row = job
        dest.parent.mkdir(exist_ok=True)
        data = (store.read_bytes(row["path"]) if row.get("path")
                else encode_png(final_image(store, row), compress_level=PNG_COMPRESS_LEVEL))
        dest.write_bytes(data)

    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="export") as pool:
        list(pool.map(write_final, jobs))
    with open(safe_join(out, "metadata.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*METADATA_COLUMNS, *score_columns])
        writer.writeheader()
        writer.writerows(records)
    return records, len(originals_done)


def _publish(building: Path, target: Path) -> None:
    """Put the finished export in `building` at `target`: one rename when `target` is absent or empty (after the
    previous export there is cleared, with overwrite), else entry by entry beside the files that are not ours."""
    if target.exists():
        _clear_previous_export(target)
        with contextlib.suppress(OSError):
            target.rmdir()  # only if empty: then the rename below puts the whole export in place at once
    if not target.exists():
        os.rename(building, target)
        return
    for entry in sorted(building.iterdir()):
        dest = target / entry.name
        if entry.is_dir() and dest.is_dir():  # a label folder beside someone's files of the same name
            for item in entry.iterdir():
                os.replace(item, dest / item.name)
        else:
            os.replace(entry, dest)
    shutil.rmtree(building, ignore_errors=True)


def dead_export_temps(manifest: Manifest) -> list[Path]:
    """Temp zips and temp export folders of killed exports: those of dead writers in the folders exports write to.

    A folder is recorded in the manifest (``meta``) before the first temp file is written there, so the folder of
    an export killed before it was ever recorded as done is known too.
    """
    folders = set()
    with manifest.session() as db:
        for (key,) in db.execute("SELECT key FROM meta WHERE substr(key, 1, ?) = ?",
                                 [len(_FOLDER_KEY), _FOLDER_KEY]):
            folders.add(Path(key[len(_FOLDER_KEY):]))
    for row in manifest.list_exports():
        for key in ("zip_path", "path"):
            if row.get(key):
                folders.add(Path(row[key]).parent)
    found = []
    for folder in sorted(folders):
        if folder.is_dir():
            entries = list(folder.iterdir())
            found += dead_temp_files(entries) + dead_temp_files(entries, folders=True)
    return found


def _remove_dead_temp_folders(folder: Path) -> None:
    for path in dead_temp_files(folder.iterdir(), folders=True):
        shutil.rmtree(path, ignore_errors=True)


def _remember_temp_folder(manifest: Manifest, folder: Path) -> None:
    """Record a folder a temp file is about to be written to, so clean-up finds it even if this export is killed."""
    with manifest.session() as db, write(db):
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", [_FOLDER_KEY + str(folder), now()])


def _check_export_dir(workspace: Path, to: Path, *, overwrite: bool) -> Path:
    """The resolved export target, refused when it overlaps the workspace, is a file, or is not empty (unless
    overwrite). Nothing is written here."""
    if "\x00" in str(to):
        raise WorkspaceError(f"export path {str(to)!r} contains a NUL character; choose a plain folder path.")
    target = to.resolve()
    if target == workspace or workspace in target.parents or target in workspace.parents:
        raise WorkspaceError(
            f"export folder '{target}' overlaps the workspace '{workspace}'; export to a folder outside it."
        )
    if target.exists() and not target.is_dir():
        raise WorkspaceError(f"export target '{target}' is a file; pass a folder.")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise WorkspaceError(f"export folder '{target}' is not empty; choose an empty folder or pass --overwrite.")
    return target


def _write_export_manifest(manifest: Manifest, workspace_name: str, path: Path, rows: list[dict],
                           records: list[dict], *, status: str) -> None:
    """A manifest.sqlite next to the export holding just its rows (and their sources and generations).

    It names no server path: the workspace appears by its folder name only.
    """
    ids = [r["id"] for r in rows]
    if path.exists():
        path.unlink()
    out = sqlite_utils.Database(sqlite3.connect(path))
    try:
        with manifest.session() as db:
            for table, values in (
                ("augmentations", ids),
                ("sources", sorted({r["source_id"] for r in rows})),
                ("generations", sorted({r["generation_id"] for r in rows})),
            ):
                ddl = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", [table]).fetchone()[0]
                out.execute(ddl)
                for start in range(0, len(values), 500):
                    chunk = values[start : start + 500]
                    selected = db.query(f"SELECT * FROM {table} WHERE id IN ({','.join('?' * len(chunk))})", chunk)
                    out[table].insert_all(selected)
            prompts = list(db.query("SELECT * FROM prompts"))
        with out.atomic():
            out["augmentations"].add_column("file_name", str)
            files = {rec["augmentation_id"]: rec["file_name"] for rec in records if rec["kind"] == "augmented"}
            for aug_id, file_name in files.items():
                out.execute("UPDATE augmentations SET file_name = ? WHERE id = ?", [file_name, aug_id])
            if prompts:
                out["prompts"].insert_all(prompts, pk="position")
            out["export_info"].insert({"created_at": now(), "workspace": workspace_name,
                                       "status_filter": status, "count": len(rows)})
    finally:
        out.conn.close()


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
    """Zip `folder` as ``<folder name>/...`` into `zip_path`, atomically; dead exports' temp zips go first."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temp_files(zip_path.parent.iterdir())
    with atomic_target(zip_path, durable=False) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs are already compressed
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
