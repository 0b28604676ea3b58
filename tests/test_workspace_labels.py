"""Issue 16, item 7: labels that look alike.

Class folders ``café`` in NFC and in NFD are one class (labels are read in NFC); ``cat`` and ``CAT`` stay two classes
but the export says that they collided and how their folders were named. Names people type (prompts, labels) share
one rule for the characters they may not hold (``checks.check_name`` / ``checks.is_unsafe_char``).
"""

from __future__ import annotations

import sqlite3
import unicodedata

import pytest

from test_safety_workspace import augment_args, cli, query, write_train

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")


def test_label_folders_merge_unicode_forms_and_report_every_collision():
    from diffusemix_core.workspace.labels import label_folders

    found = label_folders(["cat", "CAT", NFD, NFC, "dog", "a/b", "a_b"])
    assert found.folders == {"CAT": "CAT", "cat": "cat_2", NFC: NFC, NFD: NFC, "dog": "dog", "a/b": "a_b",
                             "a_b": "a_b_2"}
    notes = found.notes()
    assert len(notes) == 3
    merged = next(note for note in notes if "Unicode forms" in note)
    assert "(NFC)" in merged and "(NFD)" in merged and f"one class {NFC!r}" in merged
    assert any("'CAT' -> 'CAT', 'cat' -> 'cat_2'" in note for note in notes)
    assert any("'a/b' -> 'a_b', 'a_b' -> 'a_b_2'" in note for note in notes)
    assert label_folders(["cat", "dog"]).notes() == []  # nothing collided: nothing to say


def test_a_run_reads_nfc_and_nfd_as_one_class_and_the_export_names_the_case_collision(tmp_path):
    train = tmp_path / "train"
    write_train(train, classes=(NFC, "cat", "CAT"), per_class=1, seed=3)
    write_train(train, classes=(NFD,), per_class=1, seed=4)  # the same name, written by macOS
    assert sorted(p.name for p in train.iterdir()) == sorted([NFC, NFD, "CAT", "cat"])
    ws = tmp_path / "ws"
    run = cli(*augment_args(train, ws))
    assert run.returncode == 0, run.stderr
    merged = [line for line in run.stdout.splitlines() if "Unicode forms" in line]  # the run says it merged them
    assert len(merged) == 1 and merged[0].startswith("note: ") and f"one class {NFC!r}" in merged[0]
    assert sorted(query(ws, "SELECT label, count(*) FROM sources GROUP BY label")) == sorted([
        ("CAT", 1), ("cat", 1), (NFC, 2)])

    out = tmp_path / "export"
    exported = cli("export", "--workspace", ws, "--to", out, "--status", "all")
    assert exported.returncode == 0, exported.stderr
    assert "'CAT' -> 'CAT', 'cat' -> 'cat_2'" in exported.stderr  # said, not silent
    assert "Unicode forms" not in exported.stderr  # the run already read them as one
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(["CAT", NFC, "cat_2"])
    assert len(list((out / NFC).glob("aug_*.png"))) == 4
    rows = sqlite3.connect(out / "manifest.sqlite").execute("SELECT label, file_name FROM augmentations").fetchall()
    assert {(label, name.split("/")[0]) for label, name in rows} == {("CAT", "CAT"), ("cat", "cat_2"), (NFC, NFC)}

    nfd_filter = cli("review", "--workspace", ws, "--approve", "--label", NFD)  # typed in either form
    assert nfd_filter.returncode == 0 and nfd_filter.stdout.startswith("4 augmentation(s) marked approved")


UNSAFE = ["\x00", "\n", "\t", "\u202e", "\u2066", "\u200b", "\u2028", "\ue000"]


@pytest.mark.parametrize("ch", UNSAFE)
def test_one_rule_for_names_labels_refuse_what_a_name_may_not_hold(ch):
    from diffusemix_core.checks import check_name, is_unsafe_char
    from diffusemix_core.errors import BadArgumentError, BadPromptError
    from diffusemix_core.workspace.labels import sanitize_label

    assert is_unsafe_char(ch)
    assert sanitize_label(f"a{ch}b") == "a_b"
    with pytest.raises(BadPromptError) as info:
        check_name("prompt", f"autumn{ch}leaves", error=BadPromptError)
    message = str(info.value)
    assert f"U+{ord(ch):04X}" in message and "character 7" in message and "remove it" in message
    with pytest.raises(BadArgumentError, match=f"U\\+{ord(ch):04X}"):
        check_name("label", f"x{ch}")


def test_names_in_any_script_pass_the_rule_in_nfc():
    from diffusemix_core.checks import check_name

    for text in ("autumn leaves", "猫", "chat noir é", "ثلج", "🦊 fox"):
        assert check_name("prompt", text) == unicodedata.normalize("NFC", text)
    assert check_name("label", NFD) == NFC


@pytest.mark.parametrize("ch", ["\u202e", "\n", "\u200b"])
def test_a_prompt_with_a_character_a_label_refuses_is_refused_by_the_command_in_one_line(ch, tmp_path):
    train = tmp_path / "train"
    write_train(train, classes=("cat",), per_class=1, seed=3)
    run = cli(*augment_args(train, tmp_path / "ws"), "--prompts", f"autumn,snowy{ch}ish")
    assert run.returncode == 1 and run.stdout == ""
    line = run.stderr.strip()
    assert "\n" not in line and line.startswith("error: prompt ") and f"U+{ord(ch):04X}" in line
    assert not (tmp_path / "ws" / "manifest.sqlite").exists() or query(tmp_path / "ws",
                                                                       "SELECT count(*) FROM augmentations") == [(0,)]


def test_a_command_that_meets_a_full_disk_says_free_space_not_restore(tmp_path, monkeypatch):
    """The CLI's one line for SQLite's errors: a full disk (SQLITE_FULL, or an I/O error with no room left) says
    to free space and warns against restoring a backup; a damaged file still gets the restore advice."""
    import argparse
    import sqlite3 as sqlite

    from diffusemix_core.cli.failures import failure_message
    from diffusemix_core.workspace import health

    args = argparse.Namespace(workspace=tmp_path, command="status")
    full = failure_message(sqlite.OperationalError("database or disk is full"), args)
    assert "free some space first" in full and "do not restore" in full
    io_error = sqlite.OperationalError("disk I/O error")
    assert "free some space first" not in failure_message(io_error, args)  # this disk has room
    monkeypatch.setattr(health, "free_bytes", lambda folder: 4096)
    assert "free some space first" in failure_message(io_error, args)
    damaged = failure_message(sqlite.DatabaseError("file is not a database"), args)
    assert "restore it from a backup" in damaged and "free some space" not in damaged
