"""Editing the prompt library from the app's table without a browser (studio/prompts.py): the table conversion,
refusals that store nothing, and the token-length warning where prompts are saved."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from diffusemix_core.engine.prompts import DEFAULT_TEMPLATE, TEXT_ENCODER_MAX_TOKENS, PromptLibrary
from diffusemix_core.errors import BadArgumentError, BadPromptError
from diffusemix_core.studio.prompts import PromptEditor, library_to_table, table_rows, table_to_library
from diffusemix_core.workspace.folder import Workspace

# 40 characters, far under the 200 the library takes, but about 130 tokens: each CJK character is several tokens
LONG = "冬の山村の夕暮れ、雪が静かに降り積もり、窓には暖かい灯りがともる浮世絵風の木版画"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("prompts") / "ws")


@pytest.fixture
def editor(workspace, tmp_path):
    yield PromptEditor(workspace, tmp_path / "downloads")
    workspace.manifest.set_prompt_library(PromptLibrary.default())


def test_the_table_in_every_shape_the_app_gets_it():
    frame = pd.DataFrame([[" snowy ", True], ["autumn", False], [float("nan"), True]], columns=["prompt", "enabled"])
    assert table_rows(frame) == [[" snowy ", True], ["autumn", False], [frame.iloc[2, 0], True]]
    assert table_rows({"headers": ["prompt", "enabled"], "data": [["a", True]]}) == [["a", True]]
    assert table_rows(None) == [] and table_rows([("a", "yes")]) == [["a", "yes"]]
    library = table_to_library([["snowy", "yes"], ["autumn", "no"], ["sunset", "✓"], ["mosaic"]], DEFAULT_TEMPLATE)
    assert library_to_table(library) == [["snowy", True], ["autumn", False], ["sunset", True], ["mosaic", True]]
    with pytest.raises(BadPromptError, match="empty prompt"):  # a NaN cell is an empty prompt, named as such
        table_to_library(frame, DEFAULT_TEMPLATE)
    assert library_to_table(table_to_library(frame.iloc[:2], DEFAULT_TEMPLATE)) == [["snowy", True],
                                                                                     ["autumn", False]]


def test_saving_stores_the_library_and_refusals_store_nothing(editor):
    library, message = editor.save([["foggy morning", True], ["autumn", False]], DEFAULT_TEMPLATE)
    assert message == "✅ Saved 2 prompts (1 enabled)." and editor.library().enabled() == ["foggy morning"]
    for rows, template, reason in (([["snowy", True], ["Snowy", True]], DEFAULT_TEMPLATE, "duplicate prompt 'Snowy'"),
                                   ([["x" * 500, True]], DEFAULT_TEMPLATE, "500"),
                                   ([["snowy", False]], DEFAULT_TEMPLATE, "no enabled prompt"),
                                   ([["snowy", True]], "no placeholder", "placeholder")):
        with pytest.raises(BadPromptError, match=reason):
            editor.save(rows, template)
    assert library_to_table(editor.library()) == [["foggy morning", True], ["autumn", False]]
    _, added = editor.add([["foggy morning", True]], DEFAULT_TEMPLATE, "rainbow")
    assert added.startswith("✅ Saved 2 prompts (2 enabled)")
    _, deleted = editor.delete(library_to_table(editor.library()), DEFAULT_TEMPLATE, 0)
    assert editor.library().texts() == ["rainbow"] and deleted.startswith("✅ Saved 1 prompts")
    with pytest.raises(BadArgumentError, match="No row selected: click a row of the table first"):
        editor.delete([["rainbow", True]], DEFAULT_TEMPLATE, None)
    assert editor.reset()[0].texts() == PromptLibrary.default().texts()


def test_a_prompt_longer_than_the_text_encoder_reads_is_said_where_it_is_saved(editor):
    _, message = editor.save([["autumn", True], [LONG, True], ["unused " + LONG, False]], DEFAULT_TEMPLATE)
    first, warning = message.split("\n\n")
    assert first == "✅ Saved 3 prompts (2 enabled)."  # saved all the same: a warning, not a refusal
    assert warning.startswith(f"⚠️ Prompt '{LONG[:10]}") and f"over the {TEXT_ENCODER_MAX_TOKENS} the text encoder " \
        "reads" in warning and "shorten the prompt or the template" in warning
    assert "about" in warning and "unused" not in message  # estimated (no model loaded); disabled prompts are not
    counted = PromptEditor(editor.workspace, editor.downloads, count_tokens=lambda: lambda text: len(text.split()) * 4)
    _, exact = counted.save([["autumn", True], [LONG, True]], DEFAULT_TEMPLATE)
    assert exact == "✅ Saved 2 prompts (2 enabled)."  # this tokenizer counts 28 tokens for LONG: no warning
    long_template = "A transformed version of image into {prompt}, " + "in the style of an old master, " * 8
    _, templated = counted.save([["autumn", True]], long_template)  # the template alone can be too long
    tokens = len(long_template.replace("{prompt}", "autumn").split()) * 4
    assert f"makes {tokens} tokens" in templated and "about" not in templated  # as the given tokenizer counts
    assert counted.save([["autumn", True]], DEFAULT_TEMPLATE)[1] == "✅ Saved 1 prompts (1 enabled)."


def test_import_and_download_in_the_prompts_format(editor, tmp_path):
    source = tmp_path / "mine.json"
    source.write_text(json.dumps({"template": "Turn it into {prompt}", "prompts": ["ice", {"text": "fog",
                                                                                            "enabled": False}]}))
    library, message = editor.import_file(str(source))
    assert library.template == "Turn it into {prompt}" and message == "✅ Saved 2 prompts (1 enabled)."
    with pytest.raises(BadPromptError, match="No file given"):
        editor.import_file(None)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BadPromptError, match="not valid JSON"):
        editor.import_file(str(tmp_path / "bad.json"))
    assert editor.library().template == "Turn it into {prompt}"  # a refused import stores nothing
    toml = editor.download("TOML")
    assert toml.name == "prompt-library.toml" and PromptLibrary.load(toml).texts() == ["ice", "fog"]
    assert PromptLibrary.load(editor.download("JSON")).enabled() == ["ice"]
