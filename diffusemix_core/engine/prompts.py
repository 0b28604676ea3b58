"""Prompt library: the paper's filter-like prompts and the template, in a hand-editable JSON or TOML file.

File format (``prompts/default.json``)::

    {"template": "A transformed version of image into {prompt}",
     "prompts": [{"text": "autumn", "enabled": true}, ...]}

The TOML form has ``template = "..."`` and one ``[[prompts]]`` table per prompt (``text``, ``enabled``). A prompt
may also be written as a plain string (enabled). Prompts are stripped of surrounding whitespace; validation
rejects empty, duplicate (case-insensitive), over-long (> MAX_PROMPT_CHARS) prompts, a bad template, a rendered
instruction over MAX_RENDERED_CHARS and a library with no enabled prompt, each with a :class:`BadPromptError`.

The template is plain text with exactly one ``{prompt}`` placeholder; ``{{`` and ``}}`` are literal braces. Nothing
else in braces is accepted: no format spec or conversion (``{prompt:>99}``, ``{prompt!r}``), no other or
positional field (``{style}``, ``{}``, ``{0}``), no attribute or index access (``{prompt.upper}``,
``{prompt[0]}``), and at most MAX_TEMPLATE_CHARS characters. :meth:`PromptLibrary.render` substitutes the one
placeholder and never calls ``str.format``, so neither the template nor a prompt can expand into anything larger
than their sum.

The text encoder reads at most TEXT_ENCODER_MAX_TOKENS (77) tokens and drops the rest; that is a warning, not an
error (:meth:`PromptLibrary.warnings`), counted by a real tokenizer when one is given, else by
:func:`estimate_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
from pathlib import Path
import re
from typing import Any, Callable, Iterable

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from ..checks import check_name
from ..errors import BadPromptError
from .shipped import shipped

__all__ = ["DEFAULT_TEMPLATE", "PAPER_PROMPTS", "MAX_PROMPT_CHARS", "MAX_TEMPLATE_CHARS", "MAX_RENDERED_CHARS",
           "TEXT_ENCODER_MAX_TOKENS", "DEFAULT_PROMPTS_PATH", "PromptEntry", "PromptLibrary", "estimate_tokens"]

DEFAULT_TEMPLATE = "A transformed version of image into {prompt}"
PAPER_PROMPTS: tuple[str, ...] = ("autumn", "snowy", "sunset", "watercolor art", "rainbow", "aurora", "mosaic",
                                  "ukiyo-e", "a sketch with crayon")
MAX_PROMPT_CHARS = 200
MAX_TEMPLATE_CHARS = 300
MAX_RENDERED_CHARS = 400  # template and prompt together; far beyond what the text encoder reads anyway
TEXT_ENCODER_MAX_TOKENS = 77  # CLIP's context, start and end tokens included
PLACEHOLDER = "{prompt}"
DEFAULT_PROMPTS_PATH: Path = shipped("prompts") / "default.json"


@dataclass
class PromptEntry:
    """One prompt of the library; disabled prompts are kept in the file but never drawn."""

    text: str
    enabled: bool = True


@dataclass
class PromptLibrary:
    """The prompts P of Algorithm 1 and the template each is put in."""

    entries: list[PromptEntry] = field(default_factory=list)
    template: str = DEFAULT_TEMPLATE

    # constructors ---------------------------------------------------------------------------------------------
    @classmethod
    def default(cls) -> "PromptLibrary":
        """``prompts/default.json`` (the paper's nine prompts); the built-in copy if the file is not there."""
        if DEFAULT_PROMPTS_PATH.is_file():
            return cls.load(DEFAULT_PROMPTS_PATH)
        return cls.from_texts(PAPER_PROMPTS)

    @classmethod
    def from_texts(cls, texts: Iterable[str], template: str = DEFAULT_TEMPLATE) -> "PromptLibrary":
        """A validated library of enabled prompts."""
        if isinstance(texts, str):
            raise BadPromptError(f"expected a list of prompts, got the single string {texts!r}; wrap it in a list.")
        library = cls([PromptEntry(_text(t, "prompt"), True) for t in texts], template)
        library.validate()
        return library

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "prompt library") -> "PromptLibrary":
        """Parse ``{"template": ..., "prompts": [...]}`` and validate; errors name ``source``."""
        if not isinstance(data, dict):
            raise BadPromptError(f"{source} must be a mapping with 'template' and 'prompts', got "
                                 f"{type(data).__name__}; see prompts/default.json for the format.")
        unknown = set(data) - {"template", "prompts"}
        if unknown:
            raise BadPromptError(f"{source} has unknown keys {sorted(unknown)}; only 'template' and 'prompts' "
                                 "are allowed.")
        prompts = data.get("prompts")
        if not isinstance(prompts, list):
            raise BadPromptError(f"{source} needs a 'prompts' list; see prompts/default.json for the format.")
        entries = []
        for i, item in enumerate(prompts):
            if isinstance(item, str):
                entries.append(PromptEntry(item.strip(), True))
            elif isinstance(item, dict) and set(item) <= {"text", "enabled"} and "text" in item:
                enabled = item.get("enabled", True)
                if not isinstance(enabled, bool):
                    raise BadPromptError(f"{source}: prompt #{i + 1} has enabled={enabled!r}; use true or false.")
                entries.append(PromptEntry(_text(item["text"], f"{source}: prompt #{i + 1}"), enabled))
            else:
                raise BadPromptError(f"{source}: prompt #{i + 1} ({item!r}) must be a string or "
                                     "{\"text\": ..., \"enabled\": true|false}.")
        template = data.get("template", DEFAULT_TEMPLATE)
        library = cls(entries, _text(template, f"{source}: template"))
        try:
            library.validate()
        except BadPromptError as exc:
            raise BadPromptError(f"{source}: {exc}") from exc
        return library

    @classmethod
    def load(cls, path: str | Path) -> "PromptLibrary":
        """Load a ``.json`` or ``.toml`` file and validate it."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".toml"):
            raise BadPromptError(f"prompt file '{path}' must end in .json or .toml.")
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadPromptError(f"cannot read prompt file '{path}' ({exc.strerror or exc}); check the path.") from exc
        except UnicodeDecodeError as exc:
            raise BadPromptError(f"prompt file '{path}' is not UTF-8 text; save it as UTF-8.") from exc
        try:
            data = json.loads(raw) if suffix == ".json" else tomllib.loads(raw)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise BadPromptError(f"prompt file '{path}' is not valid {suffix[1:].upper()} ({exc}); fix the "
                                 "syntax.") from exc
        return cls.from_dict(data, source=f"prompt file '{path}'")

    # validation and use -----------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise BadPromptError for a bad template, an empty, duplicate or over-long prompt, a rendered instruction
        over MAX_RENDERED_CHARS, or no enabled prompt. Every prompt, enabled or not, is rendered once."""
        _split_template(self.template)
        seen: dict[str, str] = {}
        for entry in self.entries:
            text = entry.text
            if not isinstance(text, str) or not text.strip():
                raise BadPromptError(f"empty prompt {text!r}; remove it or write some text.")
            check_name("prompt", text, error=BadPromptError)  # the rule labels follow: no NUL, newline, override
            _check_prompt_length(text)
            key = text.strip().casefold()
            if key in seen:
                raise BadPromptError(f"duplicate prompt {text!r} (same as {seen[key]!r}); remove one of them.")
            seen[key] = text
            rendered = self.render(text)
            if len(rendered) > MAX_RENDERED_CHARS:
                raise BadPromptError(f"prompt {_show(text)} in the template makes an instruction of {len(rendered)} "
                                     f"characters, over the limit of {MAX_RENDERED_CHARS}; shorten the prompt or "
                                     "the template.")
        if not any(entry.enabled for entry in self.entries):
            raise BadPromptError("the prompt library has no enabled prompt; enable or add at least one.")

    def warnings(self, count_tokens: Callable[[str], int] | None = None) -> list[str]:
        """One sentence per enabled prompt whose rendered instruction is longer than the text encoder reads.

        ``count_tokens(text)`` gives the number of tokens the encoder sees for ``text``, start and end tokens
        included: with the model loaded, pass its tokenizer, e.g. ``lambda t: len(pipe.tokenizer(t).input_ids)``.
        Without it, :func:`estimate_tokens` is used and the sentence says "about". Raises BadPromptError for a bad
        template or an over-long prompt (as :meth:`render` does); an empty list means nothing is cut off.
        """
        count = count_tokens or estimate_tokens
        about = "" if count_tokens else "about "
        found = []
        for text in self.enabled():
            tokens = int(count(self.render(text)))
            if tokens > TEXT_ENCODER_MAX_TOKENS:
                found.append(f"prompt {_show(text)} in the template makes {about}{tokens} tokens, over the "
                             f"{TEXT_ENCODER_MAX_TOKENS} the text encoder reads, so the model never sees the end of "
                             "it; shorten the prompt or the template.")
        return found

    def enabled(self) -> list[str]:
        """Texts of the enabled prompts, in file order."""
        return [entry.text for entry in self.entries if entry.enabled]

    def texts(self) -> list[str]:
        """Texts of all prompts, enabled or not."""
        return [entry.text for entry in self.entries]

    def render(self, prompt: str) -> str:
        """The model's instruction for ``prompt``: the template with its one ``{prompt}`` replaced.

        The template is checked first (also when the library was built without :meth:`validate`, e.g. read back
        from a workspace) and the prompt must be text of at most MAX_PROMPT_CHARS characters; braces in the prompt
        are kept as they are. BadPromptError otherwise.
        """
        before, after = _split_template(self.template)
        if not isinstance(prompt, str):
            raise BadPromptError(f"prompt must be text, got {prompt!r}; put it in quotes.")
        _check_prompt_length(prompt)
        return before + prompt + after

    # serialisation ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"template": self.template,
                "prompts": [{"text": entry.text, "enabled": entry.enabled} for entry in self.entries]}

    def dumps(self, fmt: str = "json") -> str:
        """The library as JSON (indented) or TOML text; both load back to an equal library."""
        if fmt == "json":  # one prompt per line, easy to edit by hand
            rows = [json.dumps({"text": e.text, "enabled": e.enabled}, ensure_ascii=False) for e in self.entries]
            body = ",\n".join(f"    {row}" for row in rows)
            return (f'{{\n  "template": {json.dumps(self.template, ensure_ascii=False)},\n'
                    f'  "prompts": [\n{body}\n  ]\n}}\n')
        if fmt == "toml":
            lines = [f"template = {_toml_string(self.template)}", ""]
            for entry in self.entries:
                lines += ["[[prompts]]", f"text = {_toml_string(entry.text)}",
                          f"enabled = {'true' if entry.enabled else 'false'}", ""]
            return "\n".join(lines)
        raise BadPromptError(f"unknown prompt file format {fmt!r}; use 'json' or 'toml'.")

    def save(self, path: str | Path) -> None:
        """Validate, then write as JSON or TOML according to the suffix."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".toml"):
            raise BadPromptError(f"prompt file '{path}' must end in .json or .toml.")
        self.validate()
        path.write_text(self.dumps(suffix[1:]), encoding="utf-8")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadPromptError(f"{what} must be text, got {value!r}; put it in quotes.")
    return value.strip()


def _show(value: str, limit: int = 40) -> str:
    """A value for a message: quoted, and cut to `limit` characters with '...' when longer."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}..."


def _check_prompt_length(text: str) -> None:
    if len(text) > MAX_PROMPT_CHARS:
        raise BadPromptError(f"prompt {_show(text)} is {len(text)} characters long, over the limit of "
                             f"{MAX_PROMPT_CHARS}; shorten it.")


# "{{" and "}}" are literal braces, "{prompt}" the placeholder; any other brace is an error.
_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{prompt\}|[{}]")
_FIX = "write the prompt's place as a plain {prompt} and literal braces as {{ and }}"


def _split_template(template: Any) -> tuple[str, str]:
    """The template's literal text before and after its one ``{prompt}``, with ``{{``/``}}`` unescaped.

    Raises BadPromptError naming the template for anything but plain text around exactly one ``{prompt}``.
    """
    if not isinstance(template, str):
        raise BadPromptError(f"template must be text, got {template!r}; e.g. {DEFAULT_TEMPLATE!r}.")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise BadPromptError(f"template {_show(template)} is {len(template)} characters long, over the limit of "
                             f"{MAX_TEMPLATE_CHARS}; shorten it.")
    parts: list[str] = []  # literal pieces; a placeholder starts a new one
    piece: list[str] = []
    pos = 0
    for match in _TEMPLATE_TOKEN.finditer(template):
        piece.append(template[pos:match.start()])
        token = match.group()
        if token == "{{":
            piece.append("{")
        elif token == "}}":
            piece.append("}")
        elif token == PLACEHOLDER:
            parts.append("".join(piece))
            piece = []
        elif token == "{":
            raise _bad_field(template, match.start())
        else:
            raise BadPromptError(f"template {_show(template, 60)} has an unbalanced '}}' at character "
                                 f"{match.start() + 1}; {_FIX}.")
        pos = match.end()
    piece.append(template[pos:])
    parts.append("".join(piece))
    if len(parts) != 2:
        raise BadPromptError(f"template {_show(template, 60)} must contain {{prompt}} exactly once (found "
                             f"{len(parts) - 1}); e.g. {DEFAULT_TEMPLATE!r}.")
    return parts[0], parts[1]


def _bad_field(template: str, start: int) -> BadPromptError:
    """The error for a '{' at `start` that opens anything but a plain {prompt}."""
    depth = 0
    for end in range(start, len(template)):
        depth += {"{": 1, "}": -1}.get(template[end], 0)
        if depth == 0:
            break
    else:
        return BadPromptError(f"template {_show(template, 60)} has an unbalanced '{{' at character {start + 1}; "
                              f"{_FIX}.")
    spec = template[start + 1:end]
    name = re.match(r"[^:!.\[]*", spec).group()
    field_text = template[start:end + 1]
    shown = "" if field_text == template else f" ({_show(field_text, 30)})"
    if name == "prompt" and spec[len(name)] in ":!":
        what = f"gives {{prompt}} a format spec or conversion{shown}"
    elif name == "prompt":
        what = f"uses attribute or index access on {{prompt}}{shown}"
    elif name == "" or name.isdigit():
        what = f"has a positional field{shown}"
    else:
        what = f"has the field {_show(field_text, 30)}, but {{prompt}} is the only field allowed"
    return BadPromptError(f"template {_show(template, 60)} {what}; {_FIX}.")


# CLIP's tokenizer splits text into runs of letters, single digits and other characters, then into byte pairs.
_TOKEN_PIECES = re.compile(r"[A-Za-z]+|[0-9]|[^\sA-Za-z0-9]")


def estimate_tokens(text: str) -> int:
    """A conservative estimate of the CLIP tokens of ``text``, start and end tokens included.

    Counts one token per started 4 letters of each ASCII word (common English words are a single token, rarer
    ones a few), one per digit and one per UTF-8 byte of every other non-space character (punctuation,
    accented letters, CJK). For ordinary English this errs on the high side, by about half (the default
    instruction "A transformed version of image into autumn" is 14 here, about 9 for CLIP), so a warning
    comes early rather than late; it is not a bound for unusual text: pass a real tokenizer for exact counts.
    """
    count = 2  # <|startoftext|> and <|endoftext|>
    for match in _TOKEN_PIECES.finditer(text):
        piece = match.group()
        count += -(-len(piece) // 4) if piece.isascii() and piece.isalpha() else len(piece.encode("utf-8"))
    return count


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes (\\" \\\\ \\n \\t \\uXXXX ...) are all valid TOML escapes."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
