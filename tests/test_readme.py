"""The README's promises: its Python example runs as written, and CI runs its test command."""

from __future__ import annotations

import os
import tomllib

import numpy as np

from helpers import ROOT


def test_python_api_example_runs_as_written(readme_python_block, monkeypatch):
    code = readme_python_block("## Python API")
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    record, stronger = namespace["record"], namespace["stronger"]
    assert record.label == "landscape" and record.final.dtype == np.uint8
    assert stronger.lam == 0.5 and stronger.mask_kind == "top"
    assert not np.array_equal(stronger.final, record.final)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest" in (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def test_the_readme_names_the_installed_command_pyproject_declares():
    """`pip install .` gives `diffusemix` (tests/test_package.py installs it and runs it)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"] == {"diffusemix": "diffusemix_core.cli.main:main"}
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert "`pip install .`" in readme and "`diffusemix <command>` is `python -m diffusemix_core <command>`" in readme
