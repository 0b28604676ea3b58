"""Datasets people upload as zips, kept in a workspace: once per content, listed, deleted, under a disk quota.

``W/datasets/<sha256[:16]>/`` holds one extracted archive (``datasets.extract_zip_dataset``: no path escapes, no
links, no bombs) and ``upload.json`` (its original name, size, classes with their image counts, when). Uploading
the same bytes again reuses the folder: nothing is extracted twice.

A quota (bytes, optional) refuses an upload whose extracted size would take the folder past it, with a message that
says how much is used and what to delete. Checking the quota and starting the extraction are one reservation: under
the folder's lock (``W/datasets/.lock``), the uploads kept, the uploads being extracted (their staging folders,
``.tmp-<pid>-<hex>/``, each with the bytes it reserved) and the new one are counted together, and the staging folder
is made before the lock is let go. Concurrent uploads therefore never overrun the quota; the staging folder of a
process that died counts for nothing and is removed by the next upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelock import FileLock

from ..checks import format_size
from ..errors import WorkspaceError
from .datasets import class_counts, extract_zip_dataset
from .files import dead_temp_files, temp_path, writer_pid

__all__ = ["DATASETS_DIR", "UploadedDataset", "Uploads", "parse_size"]

DATASETS_DIR = "datasets"
INFO_NAME = "upload.json"
RESERVED_NAME = "reserved.json"  # in a staging folder: the bytes its extraction may write
LOCK_NAME = ".lock"
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
        """Bytes the extracted uploads take on disk (kept ones; :meth:`reserved` adds those being extracted)."""
        return sum(d.bytes for d in self.list())

    def reserved(self) -> int:
        """Bytes reserved by extractions in progress in live processes (their staging folders)."""
        if not self.folder.is_dir():
            return 0
        dead = set(self._dead_staging())
        total = 0
        for sub in self.folder.iterdir():
            if writer_pid(sub.name) is not None and sub.is_dir() and sub not in dead:
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # not a reservation of ours
                    total += int(json.loads((sub / RESERVED_NAME).read_text(encoding="utf-8"))["bytes"])
        return total

    def usage_line(self) -> str:
        """One line for people: how many uploads, how much they take, of which quota."""
        found = self.list()
        quota = f" of {format_size(self.quota_bytes)}" if self.quota_bytes is not None else ""
        return f"{len(found)} uploaded dataset(s), {format_size(sum(d.bytes for d in found))}{quota}."

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
        incoming = 0
        try:
            with zipfile.ZipFile(archive) as zf:
                incoming = sum(info.file_size for info in zf.infolist())
        except zipfile.BadZipFile:
            pass  # extract_zip_dataset says what is wrong with it
        staging = self._reserve(name, incoming)
        try:
            result = extract_zip_dataset(archive, staging / "data")
            dataset = UploadedDataset(id=dataset_id, name=name, files=result.files, bytes=result.bytes,
                                      classes=result.classes or class_counts(result.path),
                                      created_at=time.strftime("%Y-%m-%d %H:%M:%S"),
                                      root=result.path.relative_to(staging).as_posix())
            (staging / INFO_NAME).write_text(json.dumps(asdict(dataset), ensure_ascii=False), encoding="utf-8")
            with self._lock():
                if (existing / INFO_NAME).is_file():  # the same bytes, uploaded at the same time, finished first
                    shutil.rmtree(staging)
                    dataset = self.get(dataset_id)
                    dataset.reused = True
                    return dataset
                if existing.exists():  # not an upload of ours (no upload.json): out of the way
                    shutil.rmtree(existing)
                staging.rename(existing)  # the reservation becomes usage in one step
                (existing / RESERVED_NAME).unlink()
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return dataset

    def _lock(self) -> FileLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        return FileLock(self.folder / LOCK_NAME)

    def _dead_staging(self) -> list[Path]:
        return dead_temp_files(self.folder.iterdir(), folders=True) if self.folder.is_dir() else []

    def _reserve(self, name: str, incoming: int) -> Path:
        """Under the lock: refuse what would pass the quota (kept + reserved + `incoming`), else make the staging
        folder that holds the reservation. Staging folders of dead processes are removed first."""
        with self._lock():
            for dead in self._dead_staging():
                shutil.rmtree(dead, ignore_errors=True)
            if self.quota_bytes is not None:
                used, pending = self.usage(), self.reserved()
                if used + pending + incoming > self.quota_bytes:
                    busy = f" ({format_size(pending)} of it being uploaded now)" if pending else ""
                    raise WorkspaceError(
                        f"uploading '{name}' ({format_size(incoming)} extracted) would take the uploads to "
                        f"{format_size(used + pending + incoming)}{busy}, over the quota of "
                        f"{format_size(self.quota_bytes)}; delete datasets you no longer need in the Dataset tab, "
                        "or start the app with a larger --upload-quota.")
            staging = temp_path(self.folder / "upload")
            staging.mkdir()
            (staging / RESERVED_NAME).write_text(json.dumps({"bytes": incoming, "name": name}), encoding="utf-8")
        return staging

    def delete(self, dataset_id: str) -> UploadedDataset:
        """Remove an upload's folder (the workspace's rows and images made from it stay)."""
        dataset = self.get(dataset_id)
        shutil.rmtree(self.folder / dataset.id)
        return dataset
