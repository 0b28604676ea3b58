"""Prompt library: the paper's filter-like prompts and the template, in a hand-editable JSON or TOML file.

File format (``prompts/default.json``)::

    {"template": "A transformed version of image into {prompt}",
     "prompts": [{"text": "autumn", "enabled": true}, ...]}

The TOML form has ``template = "..."`` and one ``[[prompts]]`` table per prompt (``text``, ``enabled``). A prompt
may also be written as a plain string (enabled). Prompts are stripped of surrounding whitespace; validation
rejects empty, duplicate (case-insensitive), over-long (> MAX_PROMPT_CHARS) prompts, a template without exactly
one ``{prompt}`` field, and a library with no enabled prompt, each with a :class:`BadPromptError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
from pathlib import Path
import string
from typing import Any, Iterable

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from .errors import BadPromptError

__all__ = ["DEFAULT_TEMPLATE", "PAPER_PROMPTS", "MAX_PROMPT_CHARS", "DEFAULT_PROMPTS_PATH", "PromptEntry",
           "PromptLibrary"]

DEFAULT_TEMPLATE = "A transformed version of image into {prompt}"
PAPER_PROMPTS: tuple[str, ...] = ("autumn", "snowy", "sunset", "watercolor art", "rainbow", "aurora", "mosaic",
                                  "ukiyo-e", "a sketch with crayon")
MAX_PROMPT_CHARS = 200
DEFAULT_PROMPTS_PATH: Path = Path(__file__).resolve().parent.parent / "prompts" / "default.json"


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
        """Raise BadPromptError for empty, duplicate, over-long prompts, a bad template or no enabled prompt."""
        _check_template(self.template)
        seen: dict[str, str] = {}
        for entry in self.entries:
            text = entry.text
            if not isinstance(text, str) or not text.strip():
                raise BadPromptError(f"empty prompt {text!r}; remove it or write some text.")
            if len(text) > MAX_PROMPT_CHARS:
                raise BadPromptError(f"prompt {text[:40]!r}... is {len(text)} characters long, over the limit of "
                                     f"{MAX_PROMPT_CHARS}; shorten it.")
            key = text.strip().casefold()
            if key in seen:
                raise BadPromptError(f"duplicate prompt {text!r} (same as {seen[key]!r}); remove one of them.")
            seen[key] = text
        if not any(entry.enabled for entry in self.entries):
            raise BadPromptError("the prompt library has no enabled prompt; enable or add at least one.")

    def enabled(self) -> list[str]:
        """Texts of the enabled prompts, in file order."""
        return [entry.text for entry in self.entries if entry.enabled]

    def texts(self) -> list[str]:
        """Texts of all prompts, enabled or not."""
        return [entry.text for entry in self.entries]

    def render(self, prompt: str) -> str:
        """The model's instruction for ``prompt``: the template with ``{prompt}`` replaced."""
        return self.template.format(prompt=prompt)

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


def _check_template(template: Any) -> None:
    if not isinstance(template, str):
        raise BadPromptError(f"template must be text, got {template!r}.")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise BadPromptError(f"template {template!r} has unbalanced braces ({exc}); write literal braces as "
                             "{{ and }}.") from exc
    if fields != ["prompt"]:
        raise BadPromptError(f"template {template!r} must contain {{prompt}} exactly once and no other "
                             "{...} field; e.g. 'A transformed version of image into {prompt}'.")


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes (\\" \\\\ \\n \\t \\uXXXX ...) are all valid TOML escapes."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
