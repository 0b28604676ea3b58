"""The house by layer holds: the contracts of .importlinter, module sizes, a short app.py, a current picture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted((ROOT / "diffusemix_core").rglob("*.py"))


def test_the_layer_contracts_hold():
    """Upward imports, import circles (lazy ones too) and frameworks in the wrong layer fail with their line."""
    out = subprocess.run(["lint-imports", "--no-logo", "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "broken" not in out.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_450_lines(module):
    assert len(module.read_text().splitlines()) <= 450


def test_app_py_is_config_build_launch():
    assert len((ROOT / "app.py").read_text().splitlines()) < 200


def test_the_architecture_picture_is_current():
    out = subprocess.run([sys.executable, "-m", "scripts.layers", "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
