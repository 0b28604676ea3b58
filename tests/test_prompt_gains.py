"""Measured prompt gains back in the library: the `prompts` command lists them, `--disable-harmful` shows the
prompts whose gain and whole 95% interval are below zero and asks before it writes, and the `report` lists the gain."""

from __future__ import annotations

import subprocess

import pytest

from diffusemix_core.engine.prompts import PromptEntry, PromptLibrary
from diffusemix_core.workspace.folder import Workspace
from diffusemix_core.workspace.prompt_gains import harmful_prompts, latest_prompt_gains, record_prompt_gains
from helpers import ROOT, cli_command, cli_env

GAINS = [  # prompt, gain, low, high, repeats
    ("autumn", 4.0, 1.0, 7.0, 3),      # helps beyond the noise
    ("snowy", -5.0, -9.0, -1.0, 3),    # harms beyond the noise: the only one to disable
    ("sunset", -2.0, -6.0, 2.0, 3),    # within the noise
    ("mosaic", -8.0, None, None, 1),   # one seed: no interval, never called harmful
]


@pytest.fixture
def ws(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    workspace.manifest.set_prompt_library(PromptLibrary([PromptEntry(t) for t in ("autumn", "snowy", "sunset",
                                                                                      "mosaic", "rainbow")]))
    record_prompt_gains(workspace, [{"prompt": "snowy", "gain": 3.0, "low": 1.0, "high": 5.0, "repeats": 3,
                                     "model": "resnet18", "epochs": 5}])  # an older run, superseded below
    record_prompt_gains(workspace, [{"prompt": p, "gain": g, "low": lo, "high": hi, "repeats": k,
                                     "model": "resnet-tiny", "epochs": 2} for p, g, lo, hi, k in GAINS])
    return workspace


def prompts_cli(ws, *extra, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(cli_command("prompts", "--workspace", str(ws.path), *extra), input=stdin,
                          capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=120)


def enabled(ws) -> list[str]:
    return Workspace(ws.path, create=False).manifest.get_prompt_library().enabled()


def test_the_latest_gain_wins_and_only_a_gain_below_zero_beyond_the_noise_is_harmful(ws):
    assert latest_prompt_gains(ws)["snowy"]["gain"] == -5.0
    assert [r["prompt"] for r in harmful_prompts(ws)] == ["snowy"]


def test_prompts_lists_the_gains(ws):
    proc = prompts_cli(ws)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[1]: line for line in proc.stdout.splitlines()[2:]}
    assert "+4.00 [+1.00, +7.00] (3 seeds)" in lines["autumn"] and "resnet-tiny, 2 epochs" in lines["autumn"]
    assert "-8.00 (1 seed, no interval)" in lines["mosaic"]
    assert lines["rainbow"].split()[2] == "-"


@pytest.mark.parametrize("answer", ["", "n\n"])
def test_disable_harmful_asks_and_a_no_changes_nothing(ws, answer):
    proc = prompts_cli(ws, "--disable-harmful", stdin=answer)
    assert proc.returncode == 1
    assert "1 prompt(s) make the model worse beyond the noise" in proc.stdout and "snowy: -5.00" in proc.stdout
    assert "[y/N]" in proc.stdout and "nothing changed" in proc.stderr
    assert enabled(ws) == ["autumn", "snowy", "sunset", "mosaic", "rainbow"]


def test_disable_harmful_after_yes_disables_only_the_harmful(ws):
    proc = prompts_cli(ws, "--disable-harmful", stdin="y\n")
    assert proc.returncode == 0 and "disabled 1 prompt(s)" in proc.stdout
    assert enabled(ws) == ["autumn", "sunset", "mosaic", "rainbow"]
    library = Workspace(ws.path, create=False).manifest.get_prompt_library()
    assert "snowy" in library.texts()  # kept in the library, switched off
    again = prompts_cli(ws, "--disable-harmful", "--yes")
    assert again.returncode == 0 and "no harmful prompt" in again.stdout


def test_yes_does_not_ask(ws):
    proc = prompts_cli(ws, "--disable-harmful", "--yes")
    assert proc.returncode == 0 and "[y/N]" not in proc.stdout
    assert "snowy" not in enabled(ws)
