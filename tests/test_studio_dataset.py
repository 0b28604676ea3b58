"""The Dataset tab's work without a browser: the sandbox of typed server folders (data root, links, ``..``), the
folder a run may read, the uploads line, and a run with a mask feather (studio/dataset.py)."""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.errors import BadArgumentError, DiffuseMixError
from diffusemix_core.studio.dataset import DatasetRuns, typed_dataset_folder
from diffusemix_core.studio.model import ModelHolder
from diffusemix_core.workspace.folder import Workspace
from diffusemix_core.workspace.uploads import Uploads


def class_folder(folder: Path, n: int = 1, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def tree(tmp_path):
    """A data root with a good dataset, a link that leads out, a dataset holding a class linked from outside, and
    a link that stays inside; `system` stands for /usr (images nobody meant to share)."""
    system = class_folder(tmp_path / "system" / "icons").parent
    root = tmp_path / "data"
    class_folder(root / "train" / "cat")
    (root / "escape").symlink_to(system, target_is_directory=True)
    class_folder(root / "mixed" / "cat")
    (root / "mixed" / "icons").symlink_to(system / "icons", target_is_directory=True)
    class_folder(root / "linked" / "cat")
    (root / "linked" / "dog").symlink_to(root / "train" / "cat", target_is_directory=True)  # stays inside
    (root / "file.txt").write_text("not a folder")
    return root, system


def test_typed_folders_off_refuse_everything_with_the_remedy(tree):
    root, system = tree
    for folder in (root / "train", system, "/usr"):
        with pytest.raises(BadArgumentError, match=r"Typed server folders are off.*upload a zip.*--data-root DIR"):
            typed_dataset_folder(str(folder), allowed=False, data_root=None)


@pytest.mark.parametrize("relative, reason", [
    ("escape", "outside the data root"),  # a link to a folder outside: resolved before the check
    ("train/../../system", "outside the data root"),  # ``..`` climbs out
    ("mixed", r"holds 1 link\(s\) to files or folders outside the data root \(such as 'icons'\); remove them"),
    ("missing", "does not exist"),
    ("file.txt", "does not exist"),
])
def test_a_data_root_confines_typed_folders(tree, relative, reason):
    root, _ = tree
    with pytest.raises(BadArgumentError, match=reason) as info:
        typed_dataset_folder(str(root / relative), allowed=True, data_root=root)
    assert f"'{root / relative}'" in str(info.value)  # names the folder as typed


def test_folders_inside_the_data_root_are_given_resolved(tree):
    root, system = tree
    assert typed_dataset_folder(str(root / "train"), allowed=True, data_root=root) == (root / "train").resolve()
    with pytest.raises(BadArgumentError, match=r"holds 2 link\(s\)"):  # the root itself holds escape and mixed/icons
        typed_dataset_folder(str(root), allowed=True, data_root=root)
    assert typed_dataset_folder(str(root / "train"), allowed=True, data_root=root / "train") == (root / "train").resolve()
    assert typed_dataset_folder(str(root / "linked"), allowed=True, data_root=root) == (root / "linked").resolve()
    with pytest.raises(BadArgumentError, match="outside the data root"):
        typed_dataset_folder(str(system), allowed=True, data_root=root)
    # on loopback without a data root, a typed folder is the local user's own business
    assert typed_dataset_folder(str(system), allowed=True, data_root=None) == system.resolve()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("dataset") / "ws")


@functools.cache
def fractals() -> FractalLibrary:
    return FractalLibrary.default()


def runs(ws: Workspace, **options) -> DatasetRuns:
    return DatasetRuns(ws, Uploads(ws.path, quota_bytes=options.pop("quota", None)),
                       ModelHolder("tiny-random", device="cpu", steps=2, resolution=64), fractals(),
                       **{"typed_folders": True, **options})


def test_the_folder_of_a_run_is_an_upload_or_an_allowed_typed_folder(workspace, tree):
    root, system = tree
    with pytest.raises(BadArgumentError, match="No dataset given: upload a zip of class folders first, or type"):
        runs(workspace).folder("  ")
    with pytest.raises(BadArgumentError, match=r"first\.$"):
        runs(workspace, typed_folders=False).folder("")
    with pytest.raises(DiffuseMixError, match="0123456789abcdef"):
        runs(workspace).folder("upload:0123456789abcdef")
    confined = runs(workspace, data_root=root)
    assert confined.folder(str(root / "train")) == (root / "train").resolve()
    with pytest.raises(BadArgumentError, match="outside the data root"):
        confined.folder(str(system))


def test_the_uploads_line_shows_a_small_quota_in_megabytes(workspace):
    assert runs(workspace, quota=5_000_000).uploads_table() == ([], "0 uploaded dataset(s), 0 B of 5.0 MB.")
    assert runs(workspace, quota=10 * 1000**3).uploads_table()[1].endswith("of 10.0 GB.")
    assert runs(workspace).uploads_table()[1] == "0 uploaded dataset(s), 0 B."


def test_a_run_uses_the_mask_feather_it_is_given(workspace, tmp_path):
    train = tmp_path / "train"
    class_folder(train / "cat", 2)
    job = runs(workspace)
    told = []
    text, info = job.run(str(train), per_image=1, seed=0, lam=0.2, steps=2, resolution=64, batch_size=2,
                         all_prompts=False, feather=20, progress=lambda *a, **k: told.append(a))
    assert text.startswith("✅ Done. 2 images: 2 augmented now") and info["augmentations_added"] == 2
    assert told and told[-1] == ((2, 2),)
    with sqlite3.connect(job.workspace.db_path) as conn:
        assert conn.execute("SELECT feather FROM augmentations").fetchall() == [(20,), (20,)]
    again, _ = job.run(str(train), per_image=1, seed=0, lam=0.2, steps=2, resolution=64, batch_size=2,
                       all_prompts=False, feather=0)
    # a changed setting is said, with its values; nothing is redone
    assert "settings differ from the previous run's (feather 20 → 0)" in again


def test_each_session_cancels_its_own_run(workspace):
    job = runs(workspace)
    mine, theirs = job.cancel_event("a", reset=True), job.cancel_event("b", reset=True)
    assert job.cancel("a") == "Cancelling after the current batch…"
    assert mine.is_set() and not theirs.is_set()
