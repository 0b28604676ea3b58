"""Safe extraction of an uploaded dataset archive (a zip of class folders) into a workspace.

A zip from the internet is untrusted input. ``extract_zip_dataset`` refuses, before writing anything:
entries whose names escape the target folder (absolute paths, drive letters, ``..``), symbolic links,
too many files, too many bytes in total or in one file, and zip bombs (an entry or the whole archive that
expands far more than real images do). It then streams every entry with the byte limits enforced again on
the data actually written, since the sizes a zip declares can lie. Nothing is left behind on failure.

>>> root = extract_zip_dataset("flowers.zip", "workspace/datasets")    # doctest: +SKIP
>>> root.path          # the folder that holds the class folders, ready for ``run_augment``   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import WorkspaceError

log = logging.getLogger(__name__)

__all__ = ["ExtractLimits", "ExtractedDataset", "extract_zip_dataset", "find_class_root"]

IGNORED_PREFIXES = ("__MACOSX/",)
IGNORED_NAMES = (".DS_Store", "Thumbs.db")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds for an uploaded archive. Defaults suit a few thousand photos."""

    max_files: int = 20_000
    max_total_bytes: int = 2 * 1024**3  # uncompressed, whole archive
    max_file_bytes: int = 200 * 1024**2  # uncompressed, one entry
    max_ratio: float = 100.0  # uncompressed / compressed; real images compress < 10x
    ratio_min_bytes: int = 1024**2  # entries smaller than this are not ratio-checked


@dataclass(frozen=True)
class ExtractedDataset:
    """Where an archive went: ``path`` holds the class folders; ``files`` and ``bytes`` were written."""

    path: Path
    files: int
    bytes: int


def _safe_member_path(name: str, archive: str) -> PurePosixPath | None:
    """The entry's relative path, None for entries to skip; WorkspaceError if it would escape the target."""
    if any(name.startswith(prefix) for prefix in IGNORED_PREFIXES):
        return None
    normal = name.replace("\\", "/")
    rel = PurePosixPath(normal)
    parts = rel.parts
    if (
        normal.startswith("/")
        or (parts and len(parts[0]) >= 2 and parts[0][1] == ":")  # C:\..., C:/...
        or any(part == ".." for part in parts)
        or "\x00" in normal
    ):
        raise WorkspaceError(
            f"archive '{archive}' holds an entry with an unsafe path ({name!r}) that would be written outside "
            "the dataset folder; re-create the zip from the dataset folder itself."
        )
    parts = tuple(part for part in parts if part not in ("", "."))
    if not parts or parts[-1] in IGNORED_NAMES or parts[-1].startswith("._"):
        return None
    return PurePosixPath(*parts)


def _check_entries(infos: list[zipfile.ZipInfo], archive: str, limits: ExtractLimits) -> list[tuple]:
    """Validate the whole table of contents before anything is written; returns (info, rel path) to extract."""
    members = []
    total = 0
    for info in infos:
        rel = _safe_member_path(info.filename, archive)
        if rel is None or info.is_dir():
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            raise WorkspaceError(
                f"archive '{archive}' holds a symbolic link ({info.filename!r}); zip the image files themselves."
            )
        if info.file_size > limits.max_file_bytes:
            raise WorkspaceError(
                f"archive '{archive}': entry {info.filename!r} expands to {info.file_size} bytes, over the "
                f"{limits.max_file_bytes}-byte limit per file; remove it or split the dataset."
            )
        if info.file_size >= limits.ratio_min_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise WorkspaceError(
                f"archive '{archive}': entry {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
                f"(limit {limits.max_ratio:.0f}x), which looks like a zip bomb; upload the images themselves."
            )
        total += info.file_size
        members.append((info, rel))
    if len(members) > limits.max_files:
        raise WorkspaceError(
            f"archive '{archive}' holds {len(members)} files, over the limit of {limits.max_files}; "
            "split the dataset or run the command line on a folder."
        )
    if total > limits.max_total_bytes:
        raise WorkspaceError(
            f"archive '{archive}' expands to {total} bytes, over the limit of {limits.max_total_bytes}; "
            "split the dataset or run the command line on a folder."
        )
    compressed = sum(info.compress_size for info, _ in members)
    if total >= limits.ratio_min_bytes and total > limits.max_ratio * max(compressed, 1):
        raise WorkspaceError(
            f"archive '{archive}' expands {total / max(compressed, 1):.0f}x overall (limit {limits.max_ratio:.0f}x), "
            "which looks like a zip bomb; upload the images themselves."
        )
    return members


def _copy_limited(src, dst, *, limit: int, what: str) -> int:
    """Stream src to dst, refusing more than `limit` bytes (declared sizes can lie)."""
    written = 0
    while chunk := src.read(_CHUNK):
        written += len(chunk)
        if written > limit:
            raise WorkspaceError(f"{what} expands beyond its declared size; the archive is corrupt or hostile.")
        dst.write(chunk)
    return written


def find_class_root(folder: Path) -> Path:
    """Descend through single wrapper folders (``train/``, ``mydata/train/``) to the folder of class folders.

    Stops at the first folder that holds files or several folders, or whose only folder has no sub-folders
    (then that folder is itself a class).
    """
    folder = Path(folder)
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        dirs = [p for p in entries if p.is_dir()]
        if len(entries) != 1 or len(dirs) != 1:
            return folder
        if not any(child.is_dir() for child in dirs[0].iterdir()):
            return folder
        folder = dirs[0]


def extract_zip_dataset(
    archive: str | Path, dest: str | Path, *, limits: ExtractLimits = ExtractLimits()
) -> ExtractedDataset:
    """Extract `archive` into a new folder `dest` safely and return the folder of class folders.

    `dest` must not exist yet or be empty. On any error nothing is left in `dest`.
    """
    archive = Path(archive)
    dest = Path(dest)
    if not zipfile.is_zipfile(archive):
        raise WorkspaceError(f"'{archive.name}' is not a zip archive; upload a .zip of class folders.")
    if dest.exists() and any(dest.iterdir()):
        raise WorkspaceError(f"dataset folder '{dest}' is not empty; choose a new name.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            members = _check_entries(zf.infolist(), archive.name, limits)
            if not members:
                raise WorkspaceError(f"archive '{archive.name}' holds no files; zip a folder of class folders.")
            total = 0
            for info, rel in members:
                target = staging.joinpath(*rel.parts)
                if staging.resolve() not in target.resolve().parents:  # belt and braces after the name check
                    raise WorkspaceError(f"archive '{archive.name}': entry {info.filename!r} escapes the folder.")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "xb") as dst:
                    what = f"archive '{archive.name}': entry {info.filename!r}"
                    total += _copy_limited(src, dst, limit=info.file_size, what=what)
                if total > limits.max_total_bytes:
                    raise WorkspaceError(f"archive '{archive.name}' expands beyond {limits.max_total_bytes} bytes.")
        if dest.exists():
            dest.rmdir()
        staging.rename(dest)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise WorkspaceError(f"archive '{archive.name}' is corrupt ({exc}); re-create the zip.") from exc
    except FileExistsError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise WorkspaceError(
            f"archive '{archive.name}' holds the same file twice ({exc.filename}); re-create the zip."
        ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("extracted %d files (%d bytes) from %s into %s", len(members), total, archive, dest)
    return ExtractedDataset(path=find_class_root(dest), files=len(members), bytes=total)
