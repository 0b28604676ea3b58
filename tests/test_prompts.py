"""Prompt library: the paper's defaults, JSON/TOML round trips, validation errors."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings, strategies as st

from diffusemix_core.errors import BadPromptError
from diffusemix_core.engine.prompts import (DEFAULT_PROMPTS_PATH, DEFAULT_TEMPLATE, MAX_PROMPT_CHARS, PAPER_PROMPTS,
                                     PromptEntry, PromptLibrary)
from diffusemix_core.engine import prompts as prompts_module

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
         PromptEntry("tab and  two spaces")],
        template="Make it look like {prompt}, keep the {{layout}}",
    )
    path = tmp_path / f"lib{suffix}"
    lib.save(path)
    loaded = PromptLibrary.load(path)
    assert loaded == lib
    assert loaded.enabled() == ['autumn', 'neon "cyberpunk" \\ city', "tab and  two spaces"]
    assert loaded.render("x") == "Make it look like x, keep the {layout}"


# control, format and separator characters are refused with a reason (test_workspace_labels), so not drawn here
prompt_text = st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")), min_size=1,
                      max_size=MAX_PROMPT_CHARS).filter(lambda t: t.strip() == t and t != "")


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


# the template cannot be turned into a weapon ------------------------------------------------------------------
WEAPONS = [  # (template, what the error says); the first three were accepted before issue 7
    ("A transformed version of image into {prompt:>10000000}", "format spec or conversion"),
    ("{prompt:{prompt}}", "format spec or conversion"),
    ("Make it {prompt!r}", "format spec or conversion"),
    ("Make it {prompt!s:>5}", "format spec or conversion"),
    ("Make it {prompt:}", "format spec or conversion"),
    ("Make it {prompt.__class__}", "attribute or index access"),
    ("Make it {prompt[0]}", "attribute or index access"),
    ("Make it {prompt.__class__.__mro__[1].__subclasses__}", "attribute or index access"),
    ("{prompt} in {0}", "positional field"),
    ("{prompt} in {}", "positional field"),
    ("{prompt} in {style}", "the only field allowed"),
    ("{prompt} in {style:{prompt}}", "the only field allowed"),
    ("{prompt} in {", "unbalanced '{'"),
    ("{prompt} in {{{", "unbalanced '{'"),
    ("{prompt} in }", "unbalanced '}'"),
    ("{{prompt}}", "exactly once"),
]


@pytest.mark.parametrize("template,what", WEAPONS)
def test_template_with_anything_but_one_plain_placeholder_is_refused(template, what):
    with pytest.raises(BadPromptError, match=re.escape(what)) as info:
        PromptLibrary.from_texts(["autumn"], template=template)
    message = str(info.value)
    assert message.startswith(f"template {template[:40]!r}"[:-1]) and "\n" not in message and message.endswith(".")
    assert "{prompt}" in message  # the remedy shows the one form that works


@pytest.mark.parametrize("template,what", WEAPONS)
def test_render_refuses_a_bad_template_even_without_validation(template, what):
    """A library read back from a workspace is built without validate(): render must not expand it either."""
    lib = PromptLibrary([PromptEntry("autumn")], template=template)
    with pytest.raises(BadPromptError, match=re.escape(what)):
        lib.render("autumn")
    with pytest.raises(BadPromptError):
        lib.warnings()


def test_a_weaponised_template_in_a_file_is_refused_with_the_file_named(tmp_path):
    path = tmp_path / "evil.json"
    path.write_text(json.dumps({"template": "{prompt:>10000000}", "prompts": ["autumn"]}), encoding="utf-8")
    with pytest.raises(BadPromptError, match="format spec") as info:
        PromptLibrary.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "template,rendered",
    [
        ("Make it {prompt}, keep the {{layout}}", "Make it x, keep the {layout}"),
        ("{{{prompt}}}", "{x}"),
        ("}}{{ {prompt} {{}}", "}{ x {}"),
        ("{prompt}", "x"),
    ],
)
def test_literal_braces_stay_allowed(template, rendered):
    assert PromptLibrary.from_texts(["x"], template=template).render("x") == rendered


@pytest.mark.parametrize("prompt", ["{prompt}", "{0}", "{prompt:>10000000}", "{}", "}{", "{{x}}", "{prompt.__class__}"])
def test_a_prompt_is_inserted_as_it_is_never_formatted(prompt):
    lib = PromptLibrary.from_texts([prompt], template="Make it {prompt} ({{literal}})")
    assert lib.render(prompt) == f"Make it {prompt} ({{literal}})"
    assert lib.enabled() == [prompt]


def test_template_length_limit_is_inclusive():
    limit = prompts_module.MAX_TEMPLATE_CHARS
    assert limit == 300
    fits = "x" * (limit - len("{prompt}")) + "{prompt}"
    assert PromptLibrary.from_texts(["autumn"], template=fits).render("autumn").endswith("autumn")
    with pytest.raises(BadPromptError, match=f"{limit + 1} characters long, over the limit of {limit}"):
        PromptLibrary.from_texts(["autumn"], template="x" + fits)


def test_validation_renders_every_prompt_and_limits_the_rendered_length(tmp_path):
    limit = prompts_module.MAX_RENDERED_CHARS
    template = "y" * 250 + " {prompt}"  # both within their own limits, too long together
    ok = "z" * (limit - 251)
    lib = PromptLibrary.from_texts([ok], template=template)
    assert len(lib.render(ok)) == limit
    long_prompt = "z" * (limit - 250)
    lib = PromptLibrary([PromptEntry("autumn"), PromptEntry(long_prompt, enabled=False)], template=template)
    with pytest.raises(BadPromptError, match=f"{limit + 1} characters, over the limit of {limit}; shorten the "
                                             "prompt or the template"):
        lib.validate()
    with pytest.raises(BadPromptError):
        lib.save(tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()


def test_render_refuses_an_over_long_prompt():
    lib = PromptLibrary.default()
    assert lib.render("x" * MAX_PROMPT_CHARS).endswith("x" * MAX_PROMPT_CHARS)
    with pytest.raises(BadPromptError, match=f"{MAX_PROMPT_CHARS + 1} characters"):
        lib.render("x" * (MAX_PROMPT_CHARS + 1))
    with pytest.raises(BadPromptError, match="must be text"):
        lib.render(None)  # type: ignore[arg-type]


# the text encoder's 77 tokens: a warning, not an error -------------------------------------------------------
def test_the_papers_library_has_no_token_warning():
    assert PromptLibrary.default().warnings() == []
    assert prompts_module.estimate_tokens(PromptLibrary.default().render("autumn")) == 14


def test_warnings_by_the_estimate_name_each_long_enabled_prompt():
    long_prompt = ", ".join(str(i) for i in range(40))  # digits and commas: one token each in CLIP
    assert len(long_prompt) <= MAX_PROMPT_CHARS
    lib = PromptLibrary([PromptEntry("autumn"), PromptEntry(long_prompt), PromptEntry(long_prompt + "!", False)])
    lib.validate()  # a warning is not an error: the library stays valid and can be saved
    (warning,) = lib.warnings()
    assert warning.startswith(f"prompt {long_prompt[:40]!r}...") and "about" in warning and "77" in warning
    assert "shorten the prompt or the template" in warning and "\n" not in warning


def test_warnings_use_the_given_tokenizer_on_the_rendered_text():
    seen = []

    def count_tokens(text):  # stands in for e.g. lambda t: len(pipe.tokenizer(t).input_ids)
        seen.append(text)
        return 78 if "snowy" in text else 77

    lib = PromptLibrary([PromptEntry("autumn"), PromptEntry("snowy"), PromptEntry("sunset", False)],
                        template="Make it {prompt}")
    warnings = lib.warnings(count_tokens=count_tokens)
    assert seen == ["Make it autumn", "Make it snowy"]  # enabled prompts only, rendered
    assert len(warnings) == 1 and "'snowy'" in warnings[0] and "78 tokens" in warnings[0]
    assert "about" not in warnings[0]


@given(text=st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_token_estimate_counts_at_least_one_token_per_word(text):
    """CLIP never makes fewer tokens than words (plus start and end); the estimate must not either."""
    assert prompts_module.estimate_tokens(text) >= len(text.split()) + 2
