"""Train on it: the online DiffuseMix dataset, AugMix's JSD loss and the `train` command, on a toy task whose
classes differ by colour, with a workspace made by the real bulk run on the untrained tiny model."""

from __future__ import annotations

import csv
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusemix_core.cli.main import main as cli_main
from diffusemix_core.errors import BadArgumentError, WorkspaceError
from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.generation import GenerationSettings
from diffusemix_core.engine.images import load_image
from diffusemix_core.engine.masks import make_mask
from diffusemix_core.engine.mixing import blend, hybrid
from diffusemix_core.training.dataset import DiffuseMixDataset, resize_center_crop, to_tensor
from diffusemix_core.training.losses import jsd_loss
from diffusemix_core.bulk.runner import run_augment
from diffusemix_core.bulk.options import AugmentOptions
from diffusemix_core.workspace.folder import Workspace
from helpers import run_cli

COLOURS = {"blue": (40, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}
FRACTALS = FractalLibrary.procedural(4, seed=0, size=64)
SIZE = 32


def write_colour_classes(root: Path, per_class: int, seed: int) -> Path:
    """root/<colour>/<i>.png: noisy images of one colour per class, of varied small sizes."""
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = int(rng.integers(36, 57)), int(rng.integers(36, 57))
            pixels = np.clip(np.array(rgb) + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A reviewed workspace (6 images per class, 2 cached Î each, all approved) and a validation folder."""
    root = tmp_path_factory.mktemp("train")
    train = write_colour_classes(root / "train", 6, seed=0)
    write_colour_classes(root / "val", 5, seed=1)
    run_augment(Workspace(root / "ws"), train, AugmentOptions(  # the run shares the cores itself (cpu_share.py)
                per_image=2, settings=GenerationSettings(model="tiny-random", steps=2, resolution=64, device="cpu")),
                fractals=FRACTALS)
    Workspace(root / "ws").review("approved")
    with sqlite3.connect(root / "ws" / "manifest.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM augmentations WHERE status = 'approved'").fetchone()[0] == 36
    return root


def generated_paths(ws: Path, source_id: int) -> tuple[str, list[str]]:
    """The source's stored image and its approved Î, oldest first, read independently of training.py."""
    with sqlite3.connect(ws / "manifest.sqlite") as conn:
        image = conn.execute("SELECT image_path FROM sources WHERE id = ?", [source_id]).fetchone()[0]
        rows = conn.execute("SELECT DISTINCT g.id, g.path FROM augmentations a JOIN generations g "
                            "ON g.id = a.generation_id WHERE a.source_id = ? AND a.status = 'approved' ORDER BY g.id",
                            [source_id]).fetchall()
    return image, [path for _, path in rows]


def dataset(data, **kwargs) -> DiffuseMixDataset:
    return DiffuseMixDataset(data / "ws", fractals=FRACTALS, size=SIZE, **kwargs)


def items(ds, indices=None) -> list:
    return [ds[i] for i in (range(len(ds)) if indices is None else indices)]


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


# the dataset ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cache", [True, False])
def test_items_are_originals_or_remixes_of_the_sources_cached_generations(data, cache):
    """cache=True (the default): I and Î are read at the training size and mixed there; cache=False: mixed at full
    resolution, then resized. Either way each item is exactly the documented formula."""
    ds = dataset(data, p=0.5, lam=(0.1, 0.3), seed=3, cache=cache)
    assert len(ds) == 18 and ds.classes == ["blue", "green", "red"] and ds.sources_with_generated == 18
    kinds = set()
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, SIZE, SIZE)
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        source_id = int(ds.source_ids[i])
        original_path, generated = generated_paths(data / "ws", source_id)
        assert label == int(ds.targets[i])
        original = load_image(data / "ws" / original_path)
        (d,) = ds.draw(i, len(generated))
        if not d.augment:
            expected = resize_center_crop(original, SIZE)
        else:
            gen = load_image(data / "ws" / generated[d.generated])
            if cache:
                small_i, small_g = resize_center_crop(original, SIZE), resize_center_crop(gen, SIZE)
                mixed = hybrid(small_i, small_g, make_mask(d.mask, SIZE, SIZE))
            else:
                h, w = original.shape[:2]
                mixed = resize_center_crop(hybrid(original, gen, make_mask(d.mask, h, w)), SIZE)
            expected = blend(mixed, FRACTALS.fit(d.fractal, SIZE, SIZE), d.lam)
            assert 0.1 <= d.lam <= 0.3
        assert torch.equal(image, to_tensor(expected))
        kinds.add(d.augment)
    assert kinds == {True, False}  # p = 0.5 over 18 items gives both
    cached = list((data / "ws" / "cache" / f"train-{SIZE}").glob("*.npy"))
    assert (len(cached) >= 18) if cache else True  # the first pass filled it; a second reads it
    if cache:
        again = dataset(data, p=0.5, lam=(0.1, 0.3), seed=3)
        assert all(torch.equal(again[i][0], ds[i][0]) for i in range(len(ds)))


def test_labels_follow_the_class_folders_in_sorted_order(data):
    ds = dataset(data)
    with sqlite3.connect(data / "ws" / "manifest.sqlite") as conn:
        labels = dict(conn.execute("SELECT id, label FROM sources"))
    assert [ds.classes[t] for t in ds.targets] == [labels[int(s)] for s in ds.source_ids]
    assert ds.class_to_idx == {"blue": 0, "green": 1, "red": 2}


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_p_zero_gives_the_originals_and_p_one_always_remixes(data, p):
    ds = dataset(data, p=p)
    for i in range(len(ds)):
        original_path, _ = generated_paths(data / "ws", int(ds.source_ids[i]))
        original = to_tensor(resize_center_crop(load_image(data / "ws" / original_path), SIZE))
        assert torch.equal(ds[i][0], original) == (p == 0.0)


def test_same_seed_and_epoch_give_the_same_bytes_and_other_epochs_or_seeds_differ(data):
    first = items(dataset(data, p=1.0, seed=5))
    again = dataset(data, p=1.0, seed=5)
    assert all(same(a, b) for a, b in zip(first, items(again)))
    again.set_epoch(1)
    epoch1 = items(again)
    assert sum(not same(a, b) for a, b in zip(first, epoch1)) >= len(first) // 2
    again.set_epoch(0)
    assert all(same(a, b) for a, b in zip(first, items(again)))
    other_seed = items(dataset(data, p=1.0, seed=6))
    assert sum(not same(a, b) for a, b in zip(first, other_seed)) >= len(first) // 2


def test_a_transform_gets_the_full_resolution_pil_image(data):
    ds = dataset(data, p=1.0, transform=lambda pil: np.asarray(pil).copy(), seed=2)
    for i in (0, 7, 17):
        image, _ = ds[i]
        original_path, generated = generated_paths(data / "ws", int(ds.source_ids[i]))
        original = load_image(data / "ws" / original_path)
        h, w = original.shape[:2]
        (d,) = ds.draw(i, len(generated))
        gen = load_image(data / "ws" / generated[d.generated])
        expected = blend(hybrid(original, gen, make_mask(d.mask, h, w)), FRACTALS.fit(d.fractal, h, w), d.lam)
        np.testing.assert_array_equal(image, expected)


def test_jsd_items_are_the_original_and_two_independent_remixes(data):
    ds = dataset(data, jsd=True, p=0.0)  # p does not apply: both views are always DiffuseMix images
    baseline = dataset(data, p=0.0)
    distinct = 0
    for i in range(len(ds)):
        (clean, aug1, aug2), label = ds[i]
        assert torch.equal(clean, baseline[i][0]) and label == baseline[i][1]
        assert not torch.equal(aug1, clean) and not torch.equal(aug2, clean)
        distinct += not torch.equal(aug1, aug2)
    assert distinct >= len(ds) - 2  # 32 (Î, mask, fractal) combinations: two draws rarely coincide


def test_bad_arguments_are_refused(data, tmp_path):
    for kwargs in ({"p": 1.5}, {"lam": (0.3, 0.1)}, {"lam": 2.0}, {"masks": ["diagonal"]}, {"status": "ok"},
                   {"size": 0}, {"seed": -1}):
        with pytest.raises(BadArgumentError):
            DiffuseMixDataset(data / "ws", fractals=FRACTALS, **kwargs)
    with pytest.raises(WorkspaceError, match="no workspace"):
        DiffuseMixDataset(tmp_path / "nowhere")


def test_dataloader_with_two_workers_sees_every_epoch_and_opens_its_own_connections(data):
    ds = dataset(data, p=1.0, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=6, num_workers=2, persistent_workers=True)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        batches = list(loader)
        if epoch == 0:
            assert ds._conn is None  # the workers read the manifest through connections of their own
        expected = items(ds)  # computed here, in the main process, after the workers' pass
        images = torch.cat([b[0] for b in batches])
        labels = torch.cat([b[1] for b in batches])
        assert torch.equal(images, torch.stack([x for x, _ in expected]))
        assert labels.tolist() == [y for _, y in expected]
        if epoch == 0:
            first = images
    assert not torch.equal(first, images)  # the persistent workers drew from epoch 1


def test_the_dataset_pickles_without_its_connection(data):
    ds = dataset(data, p=1.0, seed=4)
    ds.set_epoch(3)
    before = items(ds, range(4))
    assert ds._conn is not None  # opened lazily by the reads above
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._conn is None and clone.epoch == 3
    assert all(same(a, b) for a, b in zip(before, items(clone, range(4))))


# the loss ---------------------------------------------------------------------------------------------------
def direct_jsd(logits: list[np.ndarray]) -> float:
    """The formula written out in float64: mean over the three views of KL(p_i ‖ M), each averaged over the batch,
    M the clamped mixture."""
    probs = []
    for x in logits:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
    mixture = np.clip(sum(probs) / 3, 1e-7, 1.0)
    kls = []
    for p in probs:
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(mixture)), 0.0)
        kls.append(terms.sum(axis=1).mean())
    return float(sum(kls) / 3)


@pytest.mark.parametrize("seed,batch,classes,scale", [(0, 4, 3, 1.0), (1, 16, 10, 3.0), (2, 1, 2, 0.1),
                                                      (3, 8, 100, 30.0)])
def test_jsd_loss_equals_the_formula(seed, batch, classes, scale):
    rng = np.random.default_rng(seed)
    logits = [rng.normal(0, scale, (batch, classes)) for _ in range(3)]
    tensors = [torch.tensor(x, dtype=torch.float32) for x in logits]
    assert jsd_loss(*tensors).item() == pytest.approx(direct_jsd(logits), rel=1e-4, abs=1e-6)
    assert jsd_loss(*tensors, weight=12.0).item() == pytest.approx(12 * direct_jsd(logits), rel=1e-4, abs=1e-5)
    same_views = jsd_loss(tensors[0], tensors[0], tensors[0]).item()
    assert same_views == pytest.approx(0.0, abs=1e-6)


def test_jsd_loss_is_bounded_by_log_3_and_has_gradients():
    logits = [torch.full((2, 3), -50.0) for _ in range(3)]
    for i, x in enumerate(logits):
        x[:, i] = 50.0  # three confident, disagreeing views: the divergence approaches log 3
        x.requires_grad_(True)
    loss = jsd_loss(*logits)
    assert 1.0 < loss.item() <= np.log(3) + 1e-6
    loss.backward()
    assert all(torch.isfinite(x.grad).all() for x in logits)


# the command ------------------------------------------------------------------------------------------------
def train_args(data, out: Path, *extra: str) -> list[str]:
    return ["train", "--workspace", str(data / "ws"), "--val-dir", str(data / "val"), "--out", str(out),
            "--model", "resnet-tiny", "--size", str(SIZE), "--batch-size", "6", "--lr", "0.05", "--device", "cpu",
            "--no-progress", *extra]


def read_results(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_train_command_runs_every_arm_writes_its_outputs_and_learns_the_toy_task(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(train_args(data, out, "--epochs", "6", "--workers", "0")) == 0
    stdout = capsys.readouterr().out
    rows = read_results(out / "results.csv")
    assert list(rows[0]) == ["arm", "seed", "epoch", "p", "loss", "val_loss", "top1", "top5", "train_images",
                             "seconds"]
    assert [(r["arm"], int(r["epoch"])) for r in rows] == [(a, e) for a in ("baseline", "export", "online")
                                                           for e in range(1, 7)]
    for arm in ("baseline", "export", "online"):
        mine = [r for r in rows if r["arm"] == arm]
        assert all(int(r["train_images"]) == 18 for r in mine)  # the same steps in every arm
        losses = [float(r["loss"]) for r in mine]
        assert np.mean(losses[-2:]) < 0.6 * np.mean(losses[:2]), (arm, losses)
        assert float(mine[-1]["top1"]) > 100 / 3 + 20, (arm, mine[-1])  # chance is 33.3%
    with Image.open(out / "curves.png") as png:
        assert png.format == "PNG" and png.size[0] >= 600
    summary = (out / "summary.md").read_text(encoding="utf-8")
    for arm in ("baseline", "export", "online"):
        assert f"| {arm} |" in summary
    assert "| export | 54 |" in summary  # 18 originals + 36 exported augmentation files
    assert "| baseline |" in stdout and "results.csv" in stdout
    exported = list((out / "export").rglob("aug_*.png"))
    assert len(exported) == 36


def test_the_command_line_entry_point_has_train():
    proc = run_cli("train", "--help", timeout=120)
    assert proc.returncode == 0 and "--val-dir" in proc.stdout and "--jsd" in proc.stdout


def test_jsd_online_arm_with_workers_and_a_lam_range_is_reproducible(data, tmp_path, capsys):
    out = tmp_path / "jsd"
    args = train_args(data, out, "--arms", "online", "--jsd", "--lam", "0.1,0.3", "--epochs", "2", "--workers", "2")
    assert cli_main(args) == 0
    rows = read_results(out / "results.csv")
    assert [r["arm"] for r in rows] == ["online", "online"]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert "JSD on (weight 12)" in (out / "summary.md").read_text(encoding="utf-8")
    capsys.readouterr()
    assert cli_main(args) == 1  # an earlier run's results are kept unless --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(args + ["--overwrite", "--workers", "0"]) == 0  # loaded in this process instead of 2 workers
    again = read_results(out / "results.csv")
    for row in (*rows, *again):
        del row["seconds"]
    assert again == rows  # the same seed gives the same training, whatever the number of workers


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_a_validation_folder_with_other_classes_is_a_one_line_error(data, tmp_path, capsys):
    val = write_colour_classes(tmp_path / "val", 1, seed=2)
    (val / "red").rename(val / "purple")
    args = train_args(data, tmp_path / "out", "--epochs", "1", "--workers", "0")
    args[args.index("--val-dir") + 1] = str(val)
    assert cli_main(args) == 1
    err = one_line_error(capsys)
    assert "'red'" in err and "'purple'" in err and "differ" in err
    args[args.index("--val-dir") + 1] = str(tmp_path / "missing")
    assert cli_main(args) == 1
    assert "does not exist" in one_line_error(capsys)
    assert not (tmp_path / "out" / "results.csv").exists()


def test_an_uncached_hub_model_is_a_one_line_error(data, tmp_path, capsys):
    args = train_args(data, tmp_path / "out", "--epochs", "1", "--workers", "0")
    args[args.index("--model") + 1] = "microsoft/resnet-50"
    assert cli_main(args + ["--pretrained"]) == 1
    err = one_line_error(capsys)
    assert "microsoft/resnet-50" in err and "--model resnet18" in err


def test_arms_that_need_augmentations_refuse_a_workspace_without_them(data, tmp_path, capsys):
    args = train_args(data, tmp_path / "out", "--epochs", "1", "--workers", "0", "--status", "rejected")
    assert cli_main(args) == 1
    assert "no rejected augmentations" in one_line_error(capsys)
    assert cli_main(args + ["--arms", "baseline"]) == 0


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # the snippet's 4 workers on a 2-core machine
def test_readme_snippet_runs(data, tmp_path, monkeypatch, readme_python_block):
    (tmp_path / "ws").symlink_to(data / "ws", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(readme_python_block("## Train on it"), namespace)
    assert namespace["images"].shape[1:] == (3, 224, 224) and namespace["labels"].dtype == torch.int64
