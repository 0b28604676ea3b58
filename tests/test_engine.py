"""The DiffuseMix engine on the tiny-random model: sampling, the record, re-mixing, batching."""

from __future__ import annotations

import numpy as np
import pytest

from diffusemix_core.engine.diffusemix import Choice, DiffuseMix, STAGE_NAMES
from diffusemix_core.errors import BadArgumentError, BadPromptError
from diffusemix_core.engine.fractals import FractalLibrary
from diffusemix_core.engine.masks import MASK_KINDS, make_mask
from diffusemix_core.engine.mixing import blend, hybrid
from diffusemix_core.engine.prompts import PAPER_PROMPTS


@pytest.fixture(scope="module")
def fractals():
    return FractalLibrary.procedural(6, seed=3, size=64)


@pytest.fixture
def dm(tiny_generator, fractals):
    return DiffuseMix(fractals=fractals, generator=tiny_generator, seed=0)


def test_sample_is_seeded_and_covers_the_libraries(dm):
    a = dm.sample(np.random.default_rng(5), 200)
    b = dm.sample(np.random.default_rng(5), 200)
    assert a == b
    assert a != dm.sample(np.random.default_rng(6), 200)
    assert {c.prompt for c in a} == set(PAPER_PROMPTS)
    assert {c.mask for c in a} == set(MASK_KINDS)
    assert {c.fractal for c in a} == set(dm.fractals.ids)
    assert len({c.seed for c in a}) == 200


def test_fixing_one_choice_does_not_shift_the_others(dm):
    free = dm.sample(np.random.default_rng(9), 20)
    fixed = dm.sample(np.random.default_rng(9), 20, mask="top")
    assert all(c.mask == "top" for c in fixed)
    assert [(c.prompt, c.fractal, c.seed) for c in free] == [(c.prompt, c.fractal, c.seed) for c in fixed]


def test_augment_record_holds_every_stage_and_follows_the_formulas(dm, photo):
    record = dm.augment(photo, prompt="snowy", mask="left", seed=11, label="cat")
    h, w = photo.shape[:2]
    stages = record.stages()
    assert tuple(stages) == STAGE_NAMES
    for name, array in stages.items():
        assert array.dtype == np.uint8 and array.shape[:2] == (h, w), name
    assert np.array_equal(record.original, photo)
    expected_mask = make_mask("left", h, w)
    assert np.array_equal(record.mask, expected_mask)
    assert np.array_equal(record.hybrid[:, : w // 2], photo[:, : w // 2])  # the kept half is the original
    assert np.array_equal(record.hybrid[:, w // 2 :], record.generated[:, w // 2 :])
    assert np.array_equal(record.final, blend(hybrid(photo, record.generated, expected_mask), record.fractal, 0.2))
    choices = record.choices()
    assert choices["prompt"] == "snowy"
    assert choices["prompt_text"] == "A transformed version of image into snowy"
    assert choices["mask"] == "left" and choices["lam"] == 0.2 and choices["seed"] == 11
    assert choices["model"] == "tiny-random" and choices["is_test_model"] is True
    assert choices["label"] == "cat"  # the label of A is the label of I
    assert choices["fractal"] in dm.fractals.ids


def test_same_seed_same_bytes_other_seed_other_bytes(dm, photo):
    a = dm.augment(photo, seed=3)
    b = dm.augment(photo, seed=3)
    c = dm.augment(photo, seed=4)
    assert a.choices() == b.choices()
    for name in STAGE_NAMES:
        assert np.array_equal(a.stages()[name], b.stages()[name]), name
    assert not np.array_equal(a.generated, c.generated)


def test_remix_reuses_the_generation(dm, photo, tiny_generator):
    record = dm.augment(photo, mask="top", seed=21)
    before = dict(tiny_generator.counters)
    other_fractal = next(f for f in dm.fractals.ids if f != record.fractal_id)
    remixed = dm.remix(record, lam=0.6, mask="bottom", fractal=other_fractal)
    assert tiny_generator.counters == before  # no model call at all
    assert np.array_equal(remixed.generated, record.generated)
    assert (remixed.lam, remixed.mask_kind, remixed.fractal_id) == (0.6, "bottom", other_fractal)
    fitted = dm.fractals.fit(other_fractal, *photo.shape[:2])
    expected = blend(hybrid(photo, record.generated, make_mask("bottom", *photo.shape[:2])), fitted, 0.6)
    assert np.array_equal(remixed.final, expected)
    assert not np.array_equal(remixed.final, record.final)


def test_remix_with_an_uploaded_fractal(dm, photo, rng):
    record = dm.augment(photo, seed=2)
    upload = rng.integers(0, 256, (30, 90, 3), dtype=np.uint8)
    remixed = dm.remix(record, fractal=upload)
    assert remixed.fractal_id.startswith("upload:")
    assert remixed.fractal.shape == photo.shape
    again = dm.remix(remixed, lam=0.5)  # the uploaded fractal survives a second re-mix
    assert np.array_equal(again.fractal, remixed.fractal)


def test_batch_encodes_each_prompt_and_image_once(dm, tiny_generator, rng):
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(3)]
    prompts = ["autumn", "sunset"]
    choices, batch_images = [], []
    for i, img in enumerate(images):
        for j, p in enumerate(prompts):
            choices.append(Choice(prompt=p, mask="right", fractal=dm.fractals.ids[0], seed=100 + 10 * i + j))
            batch_images.append(img)
    tiny_generator.counters.update(dict.fromkeys(tiny_generator.counters, 0))
    records = dm.augment_batch(batch_images, choices, batch_size=4)
    assert len(records) == 6
    assert tiny_generator.counters["text_encoder"] <= len(prompts) + 1  # + the empty negative prompt
    assert tiny_generator.counters["vae_encode"] == len(images)
    # a batched record equals the same augmentation made alone
    alone = dm.augment_batch([batch_images[3]], [choices[3]], batch_size=1)[0]
    assert np.abs(alone.generated.astype(int) - records[3].generated.astype(int)).max() <= 2


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"lam": 1.5}, BadArgumentError),
        ({"lam": -0.1}, BadArgumentError),
        ({"mask": "diagonal"}, BadArgumentError),
        ({"fractal": "no-such-fractal.png"}, BadArgumentError),
        ({"prompt": "   "}, BadPromptError),
        ({"seed": -1}, BadArgumentError),
    ],
)
def test_bad_choices_are_clear_errors(dm, photo, kwargs, error):
    with pytest.raises(error) as info:
        dm.augment(photo, **kwargs)
    assert str(info.value)


def test_constructor_validates(tiny_generator, fractals):
    with pytest.raises(BadArgumentError):
        DiffuseMix(fractals=fractals, generator=tiny_generator, lam=2)
    with pytest.raises(BadArgumentError):
        DiffuseMix(fractals=fractals, generator=tiny_generator, masks=["left", "zigzag"])
    with pytest.raises(BadPromptError):
        DiffuseMix(prompts=["autumn", "autumn"], fractals=fractals, generator=tiny_generator)


def test_all_prompts_side_by_side_share_seed_mask_and_fractal(dm, photo):
    records = dm.augment_all_prompts(photo, mask="right", seed=8)
    assert [r.prompt for r in records] == dm.prompts.enabled()
    assert {(r.requested_seed, r.mask_kind, r.fractal_id) for r in records} == {(8, "right", records[0].fractal_id)}
    single = dm.augment(photo, prompt=records[2].prompt, mask="right", seed=8)
    assert single.fractal_id == records[2].fractal_id
    assert np.abs(single.generated.astype(int) - records[2].generated.astype(int)).max() <= 2


def test_augment_with_an_uploaded_fractal(dm, photo, rng):
    upload = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    record = dm.augment(photo, fractal=upload, seed=4)
    plain = dm.augment(photo, seed=4)
    assert record.fractal_id.startswith("upload:") and record.fractal.shape == photo.shape
    assert np.array_equal(record.generated, plain.generated)  # the fractal never changes the other choices
    assert record.mask_kind == plain.mask_kind
