"""Safe extraction of uploaded dataset zips: layout found, path escapes, links, bombs and limits refused."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.datasets import ExtractLimits, extract_zip_dataset, find_class_root
from diffusemix_core.errors import WorkspaceError


def png_bytes(seed: int, size: int = 16) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(path: Path, entries: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("prefix", ["", "train/", "my data/train/"])
def test_extracts_class_folders_and_finds_the_root(tmp_path, prefix):
    entries = {
        f"{prefix}cat/1.png": png_bytes(1),
        f"{prefix}cat/2.png": png_bytes(2),
        f"{prefix}chat noir é/3.png": png_bytes(3),
        f"{prefix}.DS_Store": b"junk",
        "__MACOSX/._x": b"junk",
    }
    archive = make_zip(tmp_path / "data.zip", entries)
    result = extract_zip_dataset(archive, tmp_path / "ws" / "ds")
    assert result.files == 3
    assert sorted(p.name for p in result.path.iterdir()) == ["cat", "chat noir é"]
    assert (result.path / "cat" / "2.png").read_bytes() == png_bytes(2)
    assert result.bytes == sum(len(png_bytes(i)) for i in (1, 2, 3))
    assert not list((tmp_path / "ws").glob(".extract-*"))


def test_single_class_folder_is_kept_as_a_class(tmp_path):
    archive = make_zip(tmp_path / "one.zip", {"dogs/a.png": png_bytes(1)})
    result = extract_zip_dataset(archive, tmp_path / "ds")
    assert result.path == tmp_path / "ds"
    assert (result.path / "dogs" / "a.png").exists()


@pytest.mark.parametrize(
    "bad_name", ["../evil.png", "cat/../../evil.png", "/abs/evil.png", "C:/evil.png", "C:\\evil.png", "..\\evil.png"]
)
def test_path_escapes_are_refused_and_nothing_is_written(tmp_path, bad_name):
    archive = make_zip(tmp_path / "bad.zip", {"cat/ok.png": png_bytes(1), bad_name: png_bytes(2)})
    dest = tmp_path / "inner" / "ds"
    with pytest.raises(WorkspaceError, match="unsafe path"):
        extract_zip_dataset(archive, dest)
    assert not dest.exists()
    assert list((tmp_path / "inner").iterdir()) == []
    assert not (tmp_path / "evil.png").exists()


def test_symlinks_are_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("cat/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(WorkspaceError, match="symbolic link"):
        extract_zip_dataset(archive, tmp_path / "ds")


def test_zip_bomb_ratio_is_refused(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {"cat/zeros.png": b"\0" * (8 * 1024**2)})
    assert zipfile.ZipFile(archive).infolist()[0].compress_size < 100_000  # it is a bomb
    with pytest.raises(WorkspaceError, match="zip bomb"):
        extract_zip_dataset(archive, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_many_small_highly_compressible_files_are_refused_overall(tmp_path):
    entries = {f"cat/{i}.bin": b"\0" * 200_000 for i in range(20)}  # each under ratio_min_bytes, 4 MB total
    archive = make_zip(tmp_path / "many.zip", entries)
    with pytest.raises(WorkspaceError, match="overall"):
        extract_zip_dataset(archive, tmp_path / "ds")


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        (ExtractLimits(max_files=2), "over the limit of 2"),
        (ExtractLimits(max_total_bytes=100), "over the limit of 100"),
        (ExtractLimits(max_file_bytes=50), "limit per file"),
    ],
)
def test_count_and_size_limits(tmp_path, limits, match):
    archive = make_zip(tmp_path / "d.zip", {f"c/{i}.png": png_bytes(i) for i in range(3)})
    with pytest.raises(WorkspaceError, match=match):
        extract_zip_dataset(archive, tmp_path / "ds", limits=limits)


def test_lying_declared_size_is_caught_while_streaming(tmp_path):
    archive = make_zip(tmp_path / "lie.zip", {"c/a.png": png_bytes(1, size=64)}, compression=zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    true_size = len(png_bytes(1, size=64))
    # Shrink the declared uncompressed size in the central directory; the stored data stays longer.
    with zipfile.ZipFile(archive) as zf:
        info = zf.infolist()[0]
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (true_size // 2).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(WorkspaceError):
        extract_zip_dataset(archive, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert info.file_size == true_size


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04broken"])
def test_not_a_zip(tmp_path, content):
    path = tmp_path / "x.zip"
    path.write_bytes(content)
    with pytest.raises(WorkspaceError, match="not a zip|corrupt"):
        extract_zip_dataset(path, tmp_path / "ds")


def test_empty_archive_and_non_empty_destination(tmp_path):
    empty = make_zip(tmp_path / "empty.zip", {".DS_Store": b"x"})
    with pytest.raises(WorkspaceError, match="no files"):
        extract_zip_dataset(empty, tmp_path / "ds")
    full = make_zip(tmp_path / "full.zip", {"c/a.png": png_bytes(1)})
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(WorkspaceError, match="not empty"):
        extract_zip_dataset(full, tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_find_class_root_descends_wrappers(tmp_path):
    (tmp_path / "a" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "a" / "train" / "dog").mkdir(parents=True)
    assert find_class_root(tmp_path) == tmp_path / "a" / "train"
