"""Safe extraction of an uploaded dataset archive (a zip of class folders) into a workspace.

A zip from the internet is untrusted input. ``extract_zip_dataset`` refuses, before writing anything:
entries whose names escape the target folder (absolute paths, drive letters, ``..``), symbolic links,
too many files, too many bytes in total or in one file, and zip bombs (an entry or the whole archive that
expands far more than real images do). It then streams every entry with the byte limits enforced again on
the data actually written, since the sizes a zip declares can lie. Nothing is left behind on failure.

Entry names are decoded one by one as the tools that made them meant: an entry flagged UTF-8 (general purpose
bit 11) is UTF-8; an unflagged one is UTF-8 too when its bytes are valid UTF-8 (Linux ``zip -r``, macOS and most
tools of this century write UTF-8 without the flag, as ``unzip`` assumes), else the zip standard's cp437 (old
Windows and DOS tools). ``zipfile``'s own ``metadata_encoding`` applies one encoding to the whole archive and so
cannot read an archive that mixes them.

>>> root = extract_zip_dataset("flowers.zip", "workspace/datasets")    # doctest: +SKIP
>>> root.path          # the folder that holds the class folders, ready for ``run_augment``   # doctest: +SKIP
>>> root.classes       # [(class folder name, number of images), ...]: what a run will see   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import WorkspaceError
from ..engine.images import IGNORED_DIRS, IMAGE_EXTENSIONS
from .labels import read_label

log = logging.getLogger(__name__)

__all__ = ["ExtractLimits", "ExtractedDataset", "extract_zip_dataset", "find_class_root", "class_counts",
           "entry_name"]

IGNORED_PREFIXES = ("__MACOSX/",)
IGNORED_NAMES = (".DS_Store", "Thumbs.db")
_UTF8_FLAG = 0x800  # general purpose bit 11: the entry's name is UTF-8
MAX_NAME_BYTES = 255  # one file or folder name, in UTF-8 bytes: the limit of ext4, XFS, APFS, NTFS (in UTF-16)
MAX_PATH_BYTES = 1024  # a whole entry path: far under PATH_MAX (4096), room for the workspace's own folders
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
    """Where an archive went: ``path`` holds the class folders; ``files`` and ``bytes`` were written;
    ``classes`` is :func:`class_counts` of ``path``: each class folder with its number of images."""

    path: Path
    files: int
    bytes: int
    classes: list[tuple[str, int]] = field(default_factory=list)


def entry_name(info: zipfile.ZipInfo) -> str:
    """The name the archive's maker meant for `info`: UTF-8 when flagged or when the raw bytes are valid UTF-8,
    else cp437 (as ``zipfile`` already decoded it)."""
    if info.flag_bits & _UTF8_FLAG:
        return info.filename
    try:
        raw = info.filename.encode("cp437")  # zipfile decoded the raw bytes as cp437: this gives them back
    except UnicodeEncodeError:  # opened with another metadata_encoding: trust it
        return info.filename
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return info.filename


def class_counts(root: str | Path) -> list[tuple[str, int]]:
    """(class label, number of image files) for every class folder of `root`, sorted by label.

    The rules of the bulk run's ``scan_train_dir``, so the counts are what a run will see: class folders are the
    sub-folders of `root` (walked recursively); hidden files and folders, ``__MACOSX`` and files whose extension
    is not in IMAGE_EXTENSIONS are not counted. A class folder without images is listed with 0, so a class whose
    files were all skipped (e.g. HEIC photos) shows up instead of vanishing. Labels are read in NFC
    (``labels.read_label``): two folders that spell one name in different Unicode forms are one class.
    """
    counts: dict[str, int] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in IGNORED_DIRS or not entry.is_dir():
            continue
        n = 0
        for _, dirnames, filenames in os.walk(entry.path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in IGNORED_DIRS]
            n += sum(1 for name in filenames
                     if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS)
        label = read_label(entry.name)  # café in NFC and in NFD is one class
        counts[label] = counts.get(label, 0) + n
    return sorted(counts.items())


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
    longest = max(parts, key=lambda part: len(part.encode("utf-8")))
    too_long = len(longest.encode("utf-8")) > MAX_NAME_BYTES
    if too_long or len("/".join(parts).encode("utf-8")) > MAX_PATH_BYTES:
        what = (f"a name of {len(longest.encode('utf-8'))} bytes (limit {MAX_NAME_BYTES})" if too_long
                else f"a path of {len('/'.join(parts).encode('utf-8'))} bytes (limit {MAX_PATH_BYTES})")
        raise WorkspaceError(
            f"archive '{archive}' holds an entry with {what} that no disk can store ({_shorten(name)}); rename it "
            "and re-create the zip.")
    return PurePosixPath(*parts)


def _shorten(name: str, keep: int = 60) -> str:
    """An entry name for a message: quoted, its middle cut when long."""
    return repr(name) if len(name) <= 2 * keep else f"{name[:keep]!r}...{name[-keep:]!r}"


def _check_entries(infos: list[zipfile.ZipInfo], archive: str, limits: ExtractLimits) -> list[tuple]:
    """Validate the whole table of contents before anything is written; returns (info, rel path) to extract."""
    members = []
    total = 0
    for info in infos:
        name = entry_name(info)
        rel = _safe_member_path(name, archive)
        if rel is None or info.is_dir():
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            raise WorkspaceError(
                f"archive '{archive}' holds a symbolic link ({name!r}); zip the image files themselves."
            )
        if info.file_size > limits.max_file_bytes:
            raise WorkspaceError(
                f"archive '{archive}': entry {name!r} expands to {info.file_size} bytes, over the "
                f"{limits.max_file_bytes}-byte limit per file; remove it or split the dataset."
            )
        if info.file_size >= limits.ratio_min_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise WorkspaceError(
                f"archive '{archive}': entry {name!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
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
                    raise WorkspaceError(f"archive '{archive.name}': entry {rel.as_posix()!r} escapes the folder.")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "xb") as dst:
                    what = f"archive '{archive.name}': entry {rel.as_posix()!r}"
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
    root = find_class_root(dest)
    return ExtractedDataset(path=root, files=len(members), bytes=total, classes=class_counts(root))
