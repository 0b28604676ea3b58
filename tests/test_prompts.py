"""Prompt library: the paper's defaults, JSON/TOML round trips, validation errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from diffusemix_core.errors import BadPromptError
from diffusemix_core.prompts import (DEFAULT_PROMPTS_PATH, DEFAULT_TEMPLATE, MAX_PROMPT_CHARS, PAPER_PROMPTS,
                                     PromptEntry, PromptLibrary)

PAPER = ["autumn", "snowy", "sunset", "watercolor art", "rainbow", "aurora", "mosaic", "ukiyo-e",
         "a sketch with crayon"]


def test_default_is_the_papers_library():
    assert list(PAPER_PROMPTS) == PAPER
    assert DEFAULT_TEMPLATE == "A transformed version of image into {prompt}"
    lib = PromptLibrary.default()
    assert lib.enabled() == PAPER and lib.texts() == PAPER
    assert lib.template == DEFAULT_TEMPLATE
    assert lib.render("autumn") == "A transformed version of image into autumn"
    assert lib.render("a sketch with crayon") == "A transformed version of image into a sketch with crayon"


def test_default_file_has_the_documented_format():
    data = json.loads(DEFAULT_PROMPTS_PATH.read_text(encoding="utf-8"))
    assert data == {"template": DEFAULT_TEMPLATE, "prompts": [{"text": p, "enabled": True} for p in PAPER]}


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_round_trip(tmp_path, suffix):
    lib = PromptLibrary(
        [PromptEntry("autumn"), PromptEntry('neon "cyberpunk" \\ city'), PromptEntry("vitrail ü 浮世絵", False),
         PromptEntry("tab\tand\nnewline")],
        template="Make it look like {prompt}, keep the {{layout}}",
    )
    path = tmp_path / f"lib{suffix}"
    lib.save(path)
    loaded = PromptLibrary.load(path)
    assert loaded == lib
    assert loaded.enabled() == ['autumn', 'neon "cyberpunk" \\ city', "tab\tand\nnewline"]
    assert loaded.render("x") == "Make it look like x, keep the {layout}"


prompt_text = st.text(min_size=1, max_size=MAX_PROMPT_CHARS).filter(lambda t: t.strip() == t and t != "")


@given(texts=st.lists(prompt_text, min_size=1, max_size=6, unique_by=str.casefold),
       fmt=st.sampled_from(["json", "toml"]))
@settings(max_examples=80, deadline=None)
def test_round_trip_any_text(texts, fmt):
    lib = PromptLibrary.from_texts(texts)
    loaded = PromptLibrary.from_dict(json.loads(lib.dumps("json")) if fmt == "json" else _toml(lib.dumps("toml")))
    assert loaded == lib


def _toml(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


def test_hand_written_toml_and_plain_strings(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('template = "An image in the style of {prompt}"\n\n'
                    '[[prompts]]\ntext = "  pixel art "\n\n[[prompts]]\ntext = "charcoal"\nenabled = false\n',
                    encoding="utf-8")
    lib = PromptLibrary.load(path)
    assert lib.texts() == ["pixel art", "charcoal"] and lib.enabled() == ["pixel art"]
    json_path = tmp_path / "mine.json"
    json_path.write_text(json.dumps({"prompts": ["rain", {"text": "fog"}]}), encoding="utf-8")
    lib = PromptLibrary.load(json_path)
    assert lib.enabled() == ["rain", "fog"] and lib.template == DEFAULT_TEMPLATE


def test_limits_are_inclusive():
    PromptLibrary.from_texts(["x" * MAX_PROMPT_CHARS])
    with pytest.raises(BadPromptError, match="201 characters"):
        PromptLibrary.from_texts(["x" * (MAX_PROMPT_CHARS + 1)])


@pytest.mark.parametrize(
    "texts,template,match",
    [
        ([""], DEFAULT_TEMPLATE, "empty"),
        (["autumn", "   "], DEFAULT_TEMPLATE, "empty"),
        (["Autumn", "autumn"], DEFAULT_TEMPLATE, "duplicate"),
        (["snowy", " SNOWY "], DEFAULT_TEMPLATE, "duplicate"),
        ([], DEFAULT_TEMPLATE, "no enabled"),
        (["autumn"], "A transformed version of image", r"\{prompt\}"),
        (["autumn"], "{prompt} and {prompt}", r"\{prompt\}"),
        (["autumn"], "{prompt} in {style}", r"\{prompt\}"),
        (["autumn"], "{}", r"\{prompt\}"),
        (["autumn"], "{prompt", "unbalanced"),
        (["autumn"], "prompt}", "unbalanced"),
    ],
)
def test_validation_errors(texts, template, match):
    with pytest.raises(BadPromptError, match=match):
        PromptLibrary.from_texts(texts, template=template)


def test_validate_catches_edits_after_construction(tmp_path):
    lib = PromptLibrary.default()
    lib.entries.append(PromptEntry("MOSAIC"))
    with pytest.raises(BadPromptError, match="duplicate"):
        lib.validate()
    lib = PromptLibrary.default()
    for entry in lib.entries:
        entry.enabled = False
    with pytest.raises(BadPromptError, match="no enabled"):
        lib.validate()
    with pytest.raises(BadPromptError):
        lib.save(tmp_path / "never-written.json")
    assert not (tmp_path / "never-written.json").exists()


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("bad.json", '{"prompts": ["a",]}', "not valid JSON"),
        ("bad.toml", "template = \n", "not valid TOML"),
        ("list.json", '["autumn"]', "mapping"),
        ("noprompts.json", '{"template": "{prompt}"}', "'prompts' list"),
        ("extra.json", '{"prompts": ["a"], "colour": 1}', "unknown keys"),
        ("entry.json", '{"prompts": [3]}', "prompt #1"),
        ("flag.json", '{"prompts": [{"text": "a", "enabled": "yes"}]}', "enabled"),
        ("dup.json", '{"prompts": ["a", "A"]}', "duplicate"),
        ("notext.json", '{"prompts": [{"text": 5}]}', "must be text"),
        ("prompts.yaml", "prompts: [a]", r"\.json or \.toml"),
    ],
)
def test_bad_files_name_the_file(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BadPromptError, match=match) as info:
        PromptLibrary.load(path)
    if not name.endswith(".yaml"):
        assert str(path) in str(info.value)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(BadPromptError, match="cannot read"):
        PromptLibrary.load(tmp_path / "missing.json")
    path = tmp_path / "latin1.json"
    path.write_bytes('{"prompts": ["café"]}'.encode("latin-1"))
    with pytest.raises(BadPromptError, match="UTF-8"):
        PromptLibrary.load(path)


def test_from_texts_rejects_a_single_string_and_non_text():
    with pytest.raises(BadPromptError, match="list"):
        PromptLibrary.from_texts("autumn")
    with pytest.raises(BadPromptError, match="text"):
        PromptLibrary.from_texts(["autumn", 3])  # type: ignore[list-item]


def test_dumps_unknown_format():
    with pytest.raises(BadPromptError):
        PromptLibrary.default().dumps("yaml")
