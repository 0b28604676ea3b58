"""Safe extraction of uploaded dataset zips: layout found, path escapes, links, bombs and limits refused."""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.workspace.datasets import ExtractLimits, class_counts, entry_name, extract_zip_dataset, find_class_root
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
    assert result.classes == [("cat", 2), ("chat noir é", 1)]
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


# names as real tools write them --------------------------------------------------------------------------------
def make_raw_name_zip(path: Path, entries: list[tuple[bytes | str, bytes]]) -> Path:
    """A zip whose `bytes` names are stored as those raw bytes WITHOUT the UTF-8 flag (general purpose bit 11),
    as Linux `zip -r` does with UTF-8 names and old Windows tools with cp437 ones; `str` names go through
    zipfile, which flags a non-ASCII name as UTF-8 (as 7-Zip, Windows Explorer and macOS do)."""
    stand_ins = {}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, (name, data) in enumerate(entries):
            if isinstance(name, bytes):  # an ASCII stand-in of the same length is stored unflagged ...
                stand_in = chr(ord("A") + i).encode("ascii") * len(name)  # AAAA..., BBBB...: never overlap
                stand_ins[stand_in] = name
                zf.writestr(stand_in.decode("ascii"), data)
            else:
                zf.writestr(name, data)
    raw = path.read_bytes()
    for stand_in, name in stand_ins.items():  # ... then replaced by the raw name (names are not checksummed)
        assert raw.count(stand_in) == 2  # the local header and the central directory
        raw = raw.replace(stand_in, name)
    path.write_bytes(raw)
    return path


def test_names_are_decoded_per_entry_as_their_tools_meant(tmp_path):
    archive = make_raw_name_zip(tmp_path / "mixed.zip", [
        ("cells é/1.png".encode("utf-8"), png_bytes(1)),  # Linux zip -r: UTF-8 bytes, no flag
        ("cells é/sub/2.png".encode("utf-8"), png_bytes(2)),
        ("chat noir é/3.png", png_bytes(3)),  # flagged UTF-8
        ("naïve/4.png".encode("cp437"), png_bytes(4)),  # an old DOS/Windows tool: cp437, no flag
        (b"plain/5.png", png_bytes(5)),  # ASCII, no flag
        ("日本/6.png".encode("utf-8"), png_bytes(6)),
    ])
    with zipfile.ZipFile(archive) as zf:  # the premise: zipfile alone garbles the unflagged UTF-8 names
        infos = zf.infolist()
        assert [i.flag_bits & 0x800 for i in infos] == [0, 0, 0x800, 0, 0, 0]
        assert infos[0].filename == "cells ├⌐/1.png"
        assert [entry_name(i) for i in infos] == ["cells é/1.png", "cells é/sub/2.png", "chat noir é/3.png",
                                                  "naïve/4.png", "plain/5.png", "日本/6.png"]
    result = extract_zip_dataset(archive, tmp_path / "ds")
    assert result.classes == [("cells é", 2), ("chat noir é", 1), ("naïve", 1), ("plain", 1), ("日本", 1)]
    assert sorted(p.name for p in result.path.iterdir()) == [name for name, _ in result.classes]
    assert (result.path / "cells é" / "sub" / "2.png").read_bytes() == png_bytes(2)
    assert (result.path / "naïve" / "4.png").read_bytes() == png_bytes(4)


def test_unsafe_raw_names_are_refused_and_named_decoded(tmp_path):
    archive = make_raw_name_zip(tmp_path / "bad.zip", [(b"cat/ok.png", png_bytes(1)),
                                                      ("../évil.png".encode("utf-8"), png_bytes(2))])
    with pytest.raises(WorkspaceError, match="unsafe path.*'../évil.png'"):
        extract_zip_dataset(archive, tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and not (tmp_path / "évil.png").exists()


@pytest.mark.skipif(shutil.which("zip") is None, reason="cross-check with Info-ZIP's zip; apt-get install zip")
def test_an_archive_made_by_zip_r_keeps_its_names(tmp_path):
    """The same as the pure-Python archive above, made by the real tool when this machine has it."""
    source = tmp_path / "src"
    (source / "train" / "cells é").mkdir(parents=True)
    (source / "train" / "cells é" / "1.png").write_bytes(png_bytes(1))
    (source / "train" / "dog").mkdir()
    (source / "train" / "dog" / "2.png").write_bytes(png_bytes(2))
    subprocess.run(["zip", "-qr", str(tmp_path / "real.zip"), "train"], cwd=source, check=True,
                   env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    with zipfile.ZipFile(tmp_path / "real.zip") as zf:
        assert "train/cells ├⌐/1.png" in zf.namelist()  # no UTF-8 flag: what this test is about
    result = extract_zip_dataset(tmp_path / "real.zip", tmp_path / "ds")
    assert result.classes == [("cells é", 1), ("dog", 1)]


# the classes found, before any run ---------------------------------------------------------------------------
def test_class_counts_follow_the_rules_of_a_run(tmp_path):
    try:
        from diffusemix_core.bulk.runner import scan_train_dir
    except ImportError:  # before the bulk run moved out of workspace.py
        from diffusemix_core.bulk.runner import scan_train_dir

    files = ["cat/1.png", "cat/2.JPG", "cat/deep/er/3.webp", "cat/notes.txt", "cat/.4.png", "cat/.hidden/5.png",
             "cat/__MACOSX/6.png", "dog/1.jpeg", "empty/README.md", "heic only/1.heic", ".hidden/1.png",
             "__MACOSX/._1.png", "stray.png"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(png_bytes(1))
    (tmp_path / "no files").mkdir()
    counts = class_counts(tmp_path)
    assert counts == [("cat", 3), ("dog", 1), ("empty", 0), ("heic only", 0), ("no files", 0)]
    run_sees = Counter(label for _, label in scan_train_dir(tmp_path))
    assert run_sees == {name: n for name, n in counts if n}


@pytest.mark.parametrize("name, limit", [
    ("cat/" + "a" * 296 + ".png", "a name of 300 bytes (limit 255)"),  # ENAMETOOLONG on every common disk
    ("cat/" + "é" * 130 + ".png", "a name of 264 bytes (limit 255)"),  # 134 characters, 264 UTF-8 bytes
    ("/".join(["d" * 200] * 6) + "/x.png", "a path of 1211 bytes (limit 1024)"),
])
def test_an_entry_name_no_disk_can_store_is_refused_in_one_line(tmp_path, name, limit):
    """Issue 16 item 6: named in one line (its middle cut), before anything is written, also through an upload."""
    from diffusemix_core.workspace.uploads import Uploads

    archive = make_zip(tmp_path / "long.zip", {"cat/ok.png": png_bytes(1), name: png_bytes(2)})
    with pytest.raises(WorkspaceError) as info:
        extract_zip_dataset(archive, tmp_path / "ds")
    message = str(info.value)
    assert "\n" not in message and limit in message and "long.zip" in message
    assert name[:60] in message and name[-60:] in message and "rename it" in message
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".extract-*"))
    with pytest.raises(WorkspaceError, match="rename it and re-create the zip"):
        Uploads(tmp_path / "ws", quota_bytes=10**9).add(archive)
    assert Uploads(tmp_path / "ws").list() == [] and not list((tmp_path / "ws" / "datasets").glob(".tmp-*"))


def test_class_folders_in_nfc_and_nfd_are_one_class(tmp_path):
    """Issue 16 item 7: café written on macOS (NFD) and elsewhere (NFC) is one class with both folders' images."""
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    archive = make_zip(tmp_path / "mixed.zip", {f"{nfc}/1.png": png_bytes(1), f"{nfd}/2.png": png_bytes(2),
                                                f"{nfd}/3.png": png_bytes(3), "dog/4.png": png_bytes(4)})
    result = extract_zip_dataset(archive, tmp_path / "ds")
    assert result.classes == [(nfc, 3), ("dog", 1)]
