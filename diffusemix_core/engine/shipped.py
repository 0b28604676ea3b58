"""Where the shipped prompt library and fractal set are.

In a checkout they are the repository's top-level ``prompts/`` and ``fractals/`` folders, beside the package;
``pip install .`` puts the same files under ``<prefix>/share/diffusemix-studio/`` (pyproject.toml's data files),
where an installed package finds them from any working folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
INSTALLED = Path(sys.prefix) / "share" / "diffusemix-studio"


def shipped(name: str) -> Path:
    """The shipped folder ``name`` (``prompts`` or ``fractals``): the checkout's if there is one, else the installed."""
    beside = CHECKOUT / name
    return beside if beside.is_dir() else INSTALLED / name
