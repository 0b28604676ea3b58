"""Shared fixtures. Tests never download anything: the hub is switched off before any import."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import pytest

TINY_RESOLUTION = 64
TINY_STEPS = 4


@pytest.fixture(scope="session")
def tiny_settings():
    from diffusemix_core.engine.generation import GenerationSettings

    return GenerationSettings(model="tiny-random", steps=TINY_STEPS, resolution=TINY_RESOLUTION, device="cpu")


@pytest.fixture(scope="session")
def tiny_generator(tiny_settings):
    from diffusemix_core.engine.pix2pix import Pix2PixGenerator

    generator = Pix2PixGenerator(tiny_settings)
    generator.load()
    return generator


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def photo(rng):
    """A smooth, photo-like uint8 RGB image of an odd size (gradients plus a few shapes)."""
    h, w = 45, 67
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    img[10:30, 20:40] = (200, 40, 40)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def readme_python_block():
    """Gives the first ```python block after a heading of README.md: the README's examples are run by tests."""
    return _readme_python_block


def _readme_python_block(heading: str) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("\n" + heading + "\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]
