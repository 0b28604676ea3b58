"""Datasets people upload as zips, kept in a workspace: once per content, listed, deleted, under a disk quota.

``W/datasets/<sha256[:16]>/`` holds one extracted archive (``datasets.extract_zip_dataset``: no path escapes, no
links, no bombs) and ``upload.json`` (its original name, size, classes with their image counts, when). Uploading
the same bytes again reuses the folder: nothing is extracted twice. A quota (bytes, optional) refuses an upload
whose extracted size would take the folder past it, with a message that says how much is used and what to delete.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .datasets import extract_zip_dataset, class_counts
from ..errors import WorkspaceError

__all__ = ["DATASETS_DIR", "UploadedDataset", "Uploads", "parse_size"]

DATASETS_DIR = "datasets"
INFO_NAME = "upload.json"
_ID = re.compile(r"^[0-9a-f]{16}$")
_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str | int | None) -> int | None:
    """'5gb', '500 MB', '2GiB', 1000 -> bytes; None or '' -> None (no limit)."""
    if text is None or text == "":
        return None
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise WorkspaceError(f"size {text!r} is not understood; write it like 500mb, 5gb or 2GiB.")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@dataclass
class UploadedDataset:
    """One uploaded archive as kept in the workspace."""

    id: str  # the first 16 hex digits of the archive's sha256
    name: str  # the archive's file name as uploaded
    files: int
    bytes: int
    classes: list[tuple[str, int]] = field(default_factory=list)
    created_at: str = ""
    root: str = "."  # the folder of class folders, relative to the dataset's folder
    reused: bool = False  # this upload's bytes were there already

    @property
    def handle(self) -> str:
        """How the app refers to it (no server path): ``upload:<id>``."""
        return f"upload:{self.id}"


class Uploads:
    """The uploaded datasets of one workspace folder."""

    def __init__(self, workspace_path: str | Path, *, quota_bytes: int | None = None) -> None:
        self.folder = Path(workspace_path) / DATASETS_DIR
        self.quota_bytes = quota_bytes

    def usage(self) -> int:
        """Bytes the extracted uploads take on disk."""
        return sum(d.bytes for d in self.list())

    def list(self) -> list[UploadedDataset]:
        """Every upload, newest first."""
        found = []
        if self.folder.is_dir():
            for sub in self.folder.iterdir():
                info = sub / INFO_NAME
                if _ID.match(sub.name) and info.is_file():
                    data = json.loads(info.read_text(encoding="utf-8"))
                    data["classes"] = [tuple(c) for c in data.get("classes", [])]
                    found.append(UploadedDataset(**data))
        return sorted(found, key=lambda d: d.created_at, reverse=True)

    def get(self, dataset_id: str) -> UploadedDataset:
        if not _ID.match(dataset_id or ""):
            raise WorkspaceError(f"{dataset_id!r} is not an uploaded dataset id; pick one from the list.")
        for dataset in self.list():
            if dataset.id == dataset_id:
                return dataset
        raise WorkspaceError(f"no uploaded dataset {dataset_id!r}; it may have been deleted, upload it again.")

    def path(self, dataset_id: str) -> Path:
        """The folder of class folders of an upload (to run)."""
        dataset = self.get(dataset_id)
        return (self.folder / dataset.id / dataset.root).resolve()

    def add(self, archive: str | Path, *, name: str | None = None) -> UploadedDataset:
        """Extract `archive` unless the same bytes were uploaded before; refuses what would exceed the quota."""
        archive = Path(archive)
        digest = hashlib.sha256()
        with open(archive, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        dataset_id = digest.hexdigest()[:16]
        name = name or archive.name
        existing = self.folder / dataset_id
        if (existing / INFO_NAME).is_file():
            dataset = self.get(dataset_id)
            dataset.reused = True
            return dataset
        if existing.exists():  # an extraction that never finished: start it again
            shutil.rmtree(existing)
        if self.quota_bytes is not None:
            try:
                with zipfile.ZipFile(archive) as zf:
                    incoming = sum(info.file_size for info in zf.infolist())
            except zipfile.BadZipFile:
                incoming = 0  # extract_zip_dataset says what is wrong with it
            used = self.usage()
            if used + incoming > self.quota_bytes:
                raise WorkspaceError(
                    f"uploading '{name}' ({_human(incoming)} extracted) would take the uploads to "
                    f"{_human(used + incoming)}, over the quota of {_human(self.quota_bytes)}; delete datasets you no "
                    "longer need in the Dataset tab, or start the app with a larger --upload-quota.")
        staging = self.folder / f".{dataset_id}-{time.time_ns()}"
        try:
            result = extract_zip_dataset(archive, staging / "data")
            dataset = UploadedDataset(id=dataset_id, name=name, files=result.files, bytes=result.bytes,
                                      classes=result.classes or class_counts(result.path),
                                      created_at=time.strftime("%Y-%m-%d %H:%M:%S"),
                                      root=result.path.relative_to(staging).as_posix())
            (staging / INFO_NAME).write_text(json.dumps(asdict(dataset), ensure_ascii=False), encoding="utf-8")
            staging.rename(existing)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return dataset

    def delete(self, dataset_id: str) -> UploadedDataset:
        """Remove an upload's folder (the workspace's rows and images made from it stay)."""
        dataset = self.get(dataset_id)
        shutil.rmtree(self.folder / dataset.id)
        return dataset
