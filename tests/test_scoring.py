"""Label consistency scoring: class names and mapping files (diffusemix_core.curation.class_names), the scorer's
maths and loading (diffusemix_core.curation.label_scorer)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from diffusemix_core.errors import BadArgumentError, ModelUnavailableError
from diffusemix_core.engine.test_models import TEST_SCORERS, UNTRAINED_SCORER_NOTE, build_tiny_random_clip, is_test_model
from diffusemix_core.curation.class_names import class_names, load_class_mapping, name_from_label
from diffusemix_core.curation.label_scorer import DEFAULT_SCORER, DEFAULT_TEMPLATES, LabelConsistency, LabelScorer
from helpers import save_tiny_clip

NAMES = ["tench", "goldfish", "great white shark", "tabby cat", "golden retriever"]


@pytest.fixture(scope="module")
def scorer():
    return LabelScorer("tiny-random-clip", device="cpu").load()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    sizes = [(96, 128), (128, 96), (64, 64), (300, 200), (50, 120), (224, 224), (81, 77)]
    out = []
    for h, w in sizes:
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        from PIL import Image

        smooth = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))
        out.append(np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """The tiny scorer written the way a real CLIP snapshot is laid out (save_pretrained of all three parts)."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


# --------------------------------------------------------------------------------------------------- import
def test_import_is_light_and_an_unavailable_scorer_fails_before_torch_is_imported():
    code = ("import os, sys; os.environ['HF_HUB_OFFLINE'] = '1'\n"
            "import diffusemix_core.curation.label_scorer as s, diffusemix_core.curation.quality\n"
            "try: s.LabelScorer('diffusemix-tests/no-such-clip').load()\n"
            "except s.ModelUnavailableError: pass\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------------- class names
@pytest.mark.parametrize("label, name", [
    ("golden_retriever", "golden retriever"),
    ("sea-lion", "sea lion"),
    ("  great__white--shark ", "great white shark"),
    ("café au lait", "café au lait"),
    ("Tabby_Cat", "Tabby Cat"),
    ("___", "___"),
])
def test_name_from_label(label, name):
    assert name_from_label(label) == name


def test_class_names_from_folders_and_mapping():
    labels = ["n01440764", "golden_retriever", "n01440764", "sea-lion"]
    assert class_names(labels) == {"n01440764": "n01440764", "golden_retriever": "golden retriever",
                                   "sea-lion": "sea lion"}
    named = class_names(labels, {"n01440764": "tench", "n99999999": "not in the dataset"})
    assert list(named) == ["n01440764", "golden_retriever", "sea-lion"]
    assert named["n01440764"] == "tench" and named["sea-lion"] == "sea lion"


def test_class_names_warns_about_unnamed_imagenet_ids(caplog):
    with caplog.at_level(logging.WARNING, logger="diffusemix_core.curation.class_names"):
        class_names(["n01440764", "cat"])
    assert "mapping" in caplog.text and "n01440764" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="diffusemix_core.curation.class_names"):
        class_names(["n01440764"], {"n01440764": "tench"})
    assert caplog.text == ""


GOOD_MAPPINGS = {
    "loc.txt": ("# ImageNet LOC_synset_mapping.txt\n\nn01440764 tench, Tinca tinca\n"
                "n01443537\tgoldfish, Carassius auratus\nn01484850 great white shark\n"),
    "plain.json": json.dumps({"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great_white_shark"}),
    "index.json": json.dumps({"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"],
                              "2": ["n01484850", "great_white_shark"]}),
    "with_header.csv": "folder,name\nn01440764,tench\n\n n01443537 , goldfish \n\"n01484850\",\"great white shark\"\n",
}


@pytest.mark.parametrize("filename", GOOD_MAPPINGS)
def test_load_class_mapping(tmp_path, filename):
    path = tmp_path / filename
    path.write_text(GOOD_MAPPINGS[filename], encoding="utf-8")
    mapping = load_class_mapping(path)
    expected = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark"}
    assert {k: v for k, v in mapping.items() if k in expected} == expected
    assert class_names(["n01484850"], path) == {"n01484850": "great white shark"}


def test_load_class_mapping_utf8_bom(tmp_path):
    path = tmp_path / "names.txt"
    path.write_bytes("\ufeffchat_tigré  chat tigré\n".encode("utf-8"))
    assert load_class_mapping(str(path)) == {"chat_tigré": "chat tigré"}


BAD_MAPPINGS = [
    ("names.yaml", "n01440764: tench\n", "unsupported extension"),
    ("names.txt", "n01440764 tench\nn01443537\n", "line 2"),
    ("names.txt", "n01440764 tench\nn01440764 goldfish\n", "twice"),
    ("names.txt", "# only a comment\n\n", "no entries"),
    ("names.txt", "", "no entries"),
    ("names.json", "[\"tench\", \"goldfish\"]", "not an object"),
    ("names.json", "{\"n01440764\": 3}", "n01440764"),
    ("names.json", "{\"n01440764\": \"tench\",}", "not valid JSON"),
    ("names.csv", "n01440764,tench,extra\n", "line 1"),
    ("names.csv", "n01440764,tench\nn01443537,\n", "line 2"),
]


@pytest.mark.parametrize("filename, content, needle", BAD_MAPPINGS)
def test_bad_class_mapping_files(tmp_path, filename, content, needle):
    path = tmp_path / filename
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BadArgumentError) as err:
        load_class_mapping(path)
    message = str(err.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_missing_and_binary_mapping_files(tmp_path):
    with pytest.raises(BadArgumentError, match="does not exist"):
        load_class_mapping(tmp_path / "nope.txt")
    (tmp_path / "latin1.txt").write_bytes("n01 caf\xe9\n".encode("latin-1"))
    with pytest.raises(BadArgumentError, match="not UTF-8"):
        load_class_mapping(tmp_path / "latin1.txt")


# --------------------------------------------------------------------------------------------------- the scorer
def test_tiny_scorer_is_marked_untrained(scorer):
    assert TEST_SCORERS == ("tiny-random-clip",) and is_test_model("tiny-random-clip")
    assert scorer.is_test_model and scorer.note == UNTRAINED_SCORER_NOTE and "untrained" in scorer.note
    assert scorer.model_id == "tiny-random-clip" and scorer.device == "cpu" and scorer.dtype == "float32"
    real = LabelScorer()  # not loaded: constructing costs nothing
    assert real.model_id == DEFAULT_SCORER and not real.is_test_model and real.note == ""


def test_scores_are_probabilities_and_ranks(scorer, images):
    true = [NAMES[i % len(NAMES)] for i in range(len(images))]
    probs = scorer.probabilities(images, NAMES)
    assert probs.shape == (len(images), len(NAMES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs > 0).all()
    scores = scorer.score(images, true, NAMES)
    assert len(scores) == len(images) and all(isinstance(s, LabelConsistency) for s in scores)
    for row, name, s in zip(probs, true, scores):
        p = row[NAMES.index(name)]
        assert s.prob == pytest.approx(p)
        assert 1 <= s.rank <= len(NAMES)
        assert s.rank == 1 + int((row > p).sum())
        assert s.top_name == NAMES[int(row.argmax())] and s.top_prob == pytest.approx(row.max())
        assert (s.rank == 1) == (s.top_name == name)
    # every class as the true one: the ranks of one image are a permutation of 1..k
    for_image0 = scorer.score([images[0]] * len(NAMES), NAMES, NAMES)
    assert sorted(s.rank for s in for_image0) == list(range(1, len(NAMES) + 1))


def test_scores_are_batch_invariant_and_deterministic(scorer, images):
    one_by_one = LabelScorer("tiny-random-clip", device="cpu", batch_size=1)
    a = scorer.probabilities(images, NAMES)
    b = one_by_one.probabilities(images, NAMES)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(a, scorer.probabilities(images, NAMES))
    # a single image scores the same alone as inside a batch
    np.testing.assert_allclose(scorer.probabilities(images[3:4], NAMES)[0], a[3], rtol=1e-4, atol=1e-6)
    # the images are really looked at: different images, different probabilities
    assert np.abs(a[0] - a[1]).max() > 1e-4


def test_tiny_clip_is_seeded():
    import torch

    first, second, other = (build_tiny_random_clip(seed)[0].state_dict() for seed in (0, 0, 1))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["visual_projection.weight"], other["visual_projection.weight"])


def test_text_embeddings_are_cached_per_class_list(scorer, images, monkeypatch):
    model = scorer._parts.model
    calls = []
    original = model.get_text_features
    monkeypatch.setattr(model, "get_text_features", lambda **kw: calls.append(1) or original(**kw))
    names = ["a", "b", "c"]
    first = scorer.text_embeddings(names)
    assert len(calls) == 1  # every template x name in one call
    assert first.shape[0] == 3
    scorer.score(images, ["a"] * len(images), names)
    scorer.score(images[:2], ["b", "c"], ["a", "b", "c", "b"])  # a name listed twice counts once
    assert scorer.text_embeddings(names) is first and len(calls) == 1
    scorer.text_embeddings(["a", "b"])
    assert len(calls) == 2


def test_templates_are_averaged(scorer):
    import torch

    single = LabelScorer("tiny-random-clip", device="cpu", templates=["a photo of a {name}."])
    ensemble = scorer.text_embeddings(NAMES)
    alone = single.text_embeddings(NAMES)
    assert len(DEFAULT_TEMPLATES) > 1 and scorer.templates == DEFAULT_TEMPLATES
    torch.testing.assert_close(ensemble.norm(dim=-1), torch.ones(len(NAMES)))
    assert not torch.allclose(ensemble, alone, atol=1e-3)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(model=""), "Bad scorer"),
    (dict(device="gpu"), "Bad device"),
    (dict(dtype="float8"), "Bad dtype"),
    (dict(templates=["a photo of a {}."]), "{name}"),
    (dict(templates=[]), "{name}"),
    (dict(batch_size=0), "Bad batch size"),
])
def test_bad_scorer_arguments(kwargs, needle):
    with pytest.raises(BadArgumentError, match=None) as err:
        LabelScorer(**{"model": "tiny-random-clip", **kwargs})
    assert needle in str(err.value)


def test_bad_score_calls(scorer, images):
    with pytest.raises(BadArgumentError, match="'zebra' is not among"):
        scorer.score(images[:1], ["zebra"], NAMES)
    with pytest.raises(BadArgumentError, match="one true class name per image"):
        scorer.score(images[:2], ["tench"], NAMES)
    with pytest.raises(BadArgumentError, match="Image 1 is float32"):
        scorer.score([images[0], images[1].astype(np.float32)], ["tench", "tench"], NAMES)
    with pytest.raises(BadArgumentError, match="class names"):
        scorer.score(images[:1], ["tench"], ["tench", ""])
    assert scorer.score([], [], NAMES) == []
    assert scorer.probabilities([], NAMES).shape == (0, len(NAMES))


# --------------------------------------------------------------------------------------------------- loading
def test_uncached_hub_scorer_fails_fast_with_one_sentence():
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        LabelScorer("diffusemix-tests/no-such-clip").load()
    assert time.perf_counter() - start < 2.0
    message = str(err.value)
    assert "--scorer tiny-random-clip" in message and "diffusemix-tests/no-such-clip" in message
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0
    from huggingface_hub import constants

    assert "`hf download diffusemix-tests/no-such-clip`" in message and "huggingface-cli" not in message
    assert f"cache {Path(constants.HF_HUB_CACHE).absolute()} and" in message  # the whole folder, not 'hub'


def test_local_folder_loads_and_scores_the_same(tiny_folder, scorer, images):
    from_folder = LabelScorer(str(tiny_folder), device="cpu").load()
    assert not from_folder.is_test_model and from_folder.note == ""
    np.testing.assert_allclose(from_folder.probabilities(images, NAMES), scorer.probabilities(images, NAMES),
                               rtol=1e-5, atol=1e-7)


def test_local_folder_loads_without_torchvision_warnings(tiny_folder, tmp_path):
    import shutil

    folder = tmp_path / "copy"  # a new path: not memoised by the other tests
    shutil.copytree(tiny_folder, folder)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            LabelScorer(str(folder), device="cpu").load()
    finally:
        logger.removeHandler(handler)
    messages = [r.getMessage() for r in records] + [str(w.message) for w in caught]
    assert not [m for m in messages if "torchvision" in m], messages


def test_augment_with_the_tiny_scorer_prints_nothing_about_torchvision(tmp_path):
    """A user's `augment --scorer tiny-random-clip` (generator and scorer loaded in one fresh process): transformers'
    torchvision-fallback warning (two lines per command before) is not printed, and the run says what it did."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for label in ("cat", "dog"):
        (tmp_path / "train" / label).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(tmp_path / "train" / label / "a.png")
    command = [sys.executable, "-m", "diffusemix_core", "augment", "--train-dir", str(tmp_path / "train"),
               "--workspace", str(tmp_path / "ws"), "--model", "tiny-random", "--resolution", "64", "--steps", "1",
               "--scorer", "tiny-random-clip", "--no-progress"]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "2 augmentations added" in proc.stdout and "tiny-random-clip" in proc.stdout, proc.stdout
    assert "torchvision" not in proc.stdout + proc.stderr and "ImageProcessor" not in proc.stderr, proc.stderr


def test_bad_local_folders(tmp_path):
    with pytest.raises(ModelUnavailableError, match="no config.json") as err:
        LabelScorer(str(tmp_path), device="cpu").load()
    assert "\n" not in str(err.value)
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelUnavailableError, match="could not be loaded") as err:
        LabelScorer(str(tmp_path), device="cpu").load()
    assert "\n" not in str(err.value) and "--scorer" in str(err.value)


def test_a_model_without_an_image_tower_is_refused(tmp_path):
    model, tokenizer, processor = build_tiny_random_clip()
    from transformers import CLIPTextModel

    text_only = CLIPTextModel(model.config.text_config)
    for part in (text_only, tokenizer, processor):
        part.save_pretrained(tmp_path)
    with pytest.raises(BadArgumentError, match="not a CLIP-style model"):
        LabelScorer(str(tmp_path), device="cpu").load()


def test_thin_images_are_read_channels_last(scorer):
    """A 3-pixel-high image is ambiguous to transformers' processors unless told the layout (no warning, no mix-up)."""
    import torch
    from PIL import Image

    thin = np.random.default_rng(5).integers(0, 256, (3, 90, 3), dtype=np.uint8)
    parts = scorer._parts
    with torch.inference_mode():
        pixels = parts.image_processor(images=[Image.fromarray(thin)], return_tensors="pt")["pixel_values"]
        features = parts.model.get_image_features(pixel_values=pixels).pooler_output
        expected = torch.nn.functional.normalize(features, dim=-1)
    torch.testing.assert_close(scorer.image_embeddings([thin]), expected, rtol=1e-5, atol=1e-6)
