"""The package as a user gets it: `pip install .` into a fresh virtual environment gives the `diffusemix` command,
which runs from any folder with the shipped prompts, fractals and tokenizer files; and `--help` answers without
importing torch, diffusers, transformers, gradio, ray or the SQLite store."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, TINY, cli_env

# what a command imports when it runs, never to build the parser
HEAVY = {"torch", "diffusers", "transformers", "gradio", "ray", "pandas", "pyarrow", "sqlite_utils", "matplotlib"}
# what `pip install .` reads from a checkout (pyproject.toml names the last five)
SOURCES = ("pyproject.toml", "diffusemix_core", "prompts", "fractals", "README.md", "LICENSE", "requirements.txt")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv (seeing this machine's packages, as --system-site-packages does) with the package installed from
    a copy of the checkout: what `pip install .` builds lands in the copy, not in the repository."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    # the venv has no pip of its own: this machine's pip and setuptools install into it, offline
    result = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                             "--disable-pip-version-check", "-q", str(source)],
                            capture_output=True, text=True, env=_outside_env(), cwd=root, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"venv": venv, "python": python, "elsewhere": root}


def _outside_env() -> dict:
    """A user's environment: offline, and no PYTHONPATH pointing at the checkout."""
    return cli_env(PYTHONPATH=None)


def test_the_console_script_is_installed_and_answers_help(installed):
    result = subprocess.run([str(installed["venv"] / "bin" / "diffusemix"), "--help"], capture_output=True,
                            text=True, env=_outside_env(), cwd=installed["elsewhere"], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: diffusemix ")
    for command in ("preview", "augment", "status", "review", "check", "export", "train", "score", "report"):
        assert f"\n    {command} " in result.stdout, command


def test_the_installed_package_finds_its_shipped_files_from_another_folder(installed, tmp_path):
    code = ("import diffusemix_core, json; "
            "from diffusemix_core.engine.prompts import DEFAULT_PROMPTS_PATH as p; "
            "from diffusemix_core.engine.fractals import DEFAULT_FRACTAL_DIR as f; "
            "from diffusemix_core.engine.test_models import TINY_TOKENIZER_DIR as t; "
            "print(json.dumps([diffusemix_core.__file__, str(p), str(f), str(t)]))")
    result = subprocess.run([str(installed["python"]), "-c", code], capture_output=True, text=True,
                            env=_outside_env(), cwd=installed["elsewhere"], timeout=120)
    assert result.returncode == 0, result.stderr
    package, prompts, fractals, tokenizer = json.loads(result.stdout)
    site = str(installed["venv"])
    assert all(path.startswith(site) for path in (package, prompts, fractals, tokenizer))  # not the checkout's
    assert Path(prompts).is_file()
    assert len(list(Path(fractals).glob("*.png"))) == 32
    assert {p.name for p in Path(tokenizer).iterdir()} >= {"vocab.json", "merges.txt"}

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    preview = subprocess.run([str(installed["venv"] / "bin" / "diffusemix"), "preview", str(image), "--out",
                              str(out), *TINY], capture_output=True, text=True, env=_outside_env(), cwd=tmp_path,
                             timeout=300)
    assert preview.returncode == 0, preview.stderr[-3000:]
    # a fractal of the shipped set (not the procedural fallback) and a prompt of the shipped library
    assert re.search(r"fractal=(ifs|julia|mandelbrot)_\d{3}\.png ", preview.stdout), preview.stdout
    assert {p.name for p in out.iterdir()} == {"original.png", "generated.png", "mask.png", "hybrid.png",
                                               "fractal.png", "final.png", "choices.json"}


@pytest.mark.parametrize("args", [["--help"], ["augment", "--help"], ["preview", "--help"], ["train", "--help"],
                                  ["score", "--help"]])
def test_help_imports_no_heavy_library(args):
    """-X importtime lists every module imported: a sturdier measure than a time bound on a loaded machine."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "diffusemix_core", *args], capture_output=True,
                            text=True, env=cli_env(), cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "diffusemix_core.cli.main" in imported  # the listing is read right
    assert not {name.split(".")[0] for name in imported} & HEAVY, sorted(
        name for name in imported if name.split(".")[0] in HEAVY)
