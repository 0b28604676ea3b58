"""The app's model holder (studio/model.py): one generator per distinct GenerationSettings, never one built with
older values; the status line; the tokenizer of the loaded model for counting prompt tokens."""

from __future__ import annotations

import dataclasses

import pytest

from diffusemix_core.engine.generation import GenerationSettings
from diffusemix_core.errors import ModelUnavailableError
from diffusemix_core.studio.model import ModelHolder


def test_settings_are_frozen_and_hashable():
    a = GenerationSettings(model="tiny-random", steps=2, resolution=64, device="cpu")
    assert hash(a) == hash(dataclasses.replace(a)) and a == dataclasses.replace(a)
    assert len({a, dataclasses.replace(a, guidance_scale=7.5), dataclasses.replace(a)}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.steps = 3  # type: ignore[misc]


def test_one_generator_per_distinct_setting():
    holder = ModelHolder("tiny-random", device="cpu", steps=2, resolution=64)
    assert holder.token_counter() is None  # nothing loaded yet: prompts are estimated
    default = holder.generator()
    assert default.settings == holder.settings() == GenerationSettings(model="tiny-random", steps=2, resolution=64,
                                                                       device="cpu")
    assert holder.generator() is default and holder.generator(holder.settings()) is default
    other_steps = holder.generator(steps=3, resolution=64)
    assert other_steps is not default and other_steps.settings.steps == 3
    # a setting the old (steps, resolution) key did not see gets its own generator, built with its value
    guided = holder.generator(dataclasses.replace(holder.settings(), guidance_scale=7.5))
    assert guided is not default and guided.settings.guidance_scale == 7.5 and default.settings.guidance_scale == 4.0
    assert holder.generator(dataclasses.replace(holder.settings(), guidance_scale=7.5)) is guided
    assert holder.loaded and "loaded" in holder.status() and "untrained" in holder.status().lower()
    count = holder.token_counter()
    assert count("a") < count("a much longer prompt about a snowy mountain at sunset")


def test_a_model_that_cannot_load_is_said_in_the_status_line(tmp_path):
    holder = ModelHolder(str(tmp_path / "no-such-model"), device="cpu", steps=2, resolution=64)
    assert "loads on first Generate" in holder.status()
    with pytest.raises(ModelUnavailableError):
        holder.generator()
    assert holder.status().startswith(f"**Model `{tmp_path / 'no-such-model'}` is unavailable.**")
    assert "no-such-model" in holder.error and not holder.loaded
