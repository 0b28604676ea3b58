"""Editing the workspace's prompt library from a table: rows in, a validated library stored, a sentence out.

The table is the app's editor (a DataFrame from the browser, a list of rows from the API): ``[text, enabled]`` per
row. Saving validates the whole library (BadPromptError with the reason: nothing is stored) and says which enabled
prompts are longer than the text encoder reads (``PromptLibrary.warnings``: the model would silently drop the end),
counted by the loaded model's tokenizer, or estimated before the model is loaded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from ..curation.queries import prompt_report
from ..engine.prompts import PromptEntry, PromptLibrary
from ..errors import BadArgumentError, BadPromptError
from ..workspace.folder import Workspace
from ..workspace.prompt_gains import describe_gain, disable_prompts, harmful_prompts, latest_prompt_gains

__all__ = ["TABLE_HEADERS", "PromptEditor", "library_to_table", "table_rows", "table_to_library"]

# the editor's columns: the two edited ones, then what was measured (read-only)
TABLE_HEADERS = ["prompt", "enabled", "measured gain (95% CI)", "label p(A)"]

TRUE_WORDS = ("true", "1", "yes", "y", "x", "✓")


def table_rows(table: Any) -> list[list]:
    """The prompt editor's value as plain rows (Gradio gives a DataFrame, the API a list of rows or a dict with
    "data")."""
    if isinstance(table, dict):
        table = table.get("data")
    return table.values.tolist() if hasattr(table, "values") else [list(row) for row in (table or [])]


def _cell_text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()


def _cell_enabled(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in TRUE_WORDS
    return bool(value)


def table_to_library(table: Any, template: str) -> PromptLibrary:
    """The editor's rows -> a validated PromptLibrary (BadPromptError naming the bad entry)."""
    entries = [PromptEntry(text=_cell_text(row[0] if row else None), enabled=_cell_enabled(row[1]) if len(row) > 1
                           else True) for row in table_rows(table)]
    library = PromptLibrary(entries=entries, template=template)
    library.validate()
    return library


def library_to_table(library: PromptLibrary) -> list[list]:
    return [[entry.text, bool(entry.enabled)] for entry in library.entries]



class PromptEditor:
    """The workspace's prompt library, edited through the table (every later run uses what is saved)."""

    def __init__(self, workspace: Workspace, downloads: Path,
                 count_tokens: Callable[[], Callable[[str], int] | None] = lambda: None) -> None:
        self.workspace, self.downloads, self.count_tokens = workspace, Path(downloads), count_tokens

    def library(self) -> PromptLibrary:
        return self.workspace.manifest.get_prompt_library()

    def table(self, library: PromptLibrary | None = None) -> list[list]:
        """The editor's rows: [text, enabled, measured gain, label consistency] (the last two read-only)."""
        library = library if library is not None else self.library()
        gains = latest_prompt_gains(self.workspace)
        consistency = {r["prompt"]: r["mean_label_prob"] for r in prompt_report(self.workspace)}
        return [[e.text, bool(e.enabled), describe_gain(gains.get(e.text), compact=True),
                 "–" if consistency.get(e.text) is None else f"{consistency[e.text]:.2f}"] for e in library.entries]

    def harmful(self) -> tuple[list[str], str]:
        """(the enabled prompts measured harmful, a sentence listing them and asking, or saying there are none)."""
        rows = harmful_prompts(self.workspace)
        if not rows:
            return [], ("No harmful prompt: none has a measured gain below 0 with its 95% interval below 0 "
                        "(measure with several seeds below, or `train --per-prompt --repeats 3`).")
        listed = "\n".join(f"- **{r['prompt']}**: {describe_gain(r, compact=True)}" for r in rows)
        return [r["prompt"] for r in rows], (f"{len(rows)} prompt(s) make the model worse beyond the noise:"
                                             f"\n\n{listed}\n\nDisable them? They stay in the library.")

    def disable(self, prompts: list[str]) -> tuple[PromptLibrary, str]:
        """Disable the prompts the user confirmed (still harmful now); (the library, a sentence)."""
        still = set(self.harmful()[0]) & set(prompts or [])
        if not still:
            return self.library(), "Nothing disabled: no prompt confirmed is harmful now."
        library = disable_prompts(self.workspace, still)
        return library, f"✅ Disabled {len(still)} prompt(s): {', '.join(sorted(still))}."

    def save(self, table: Any, template: str) -> tuple[PromptLibrary, str]:
        """Store the edited library: (the library, '✅ Saved …' with any token-length warnings). BadPromptError
        (nothing stored) for a bad entry or template."""
        library = table_to_library(table, template)
        self.workspace.manifest.set_prompt_library(library)
        message = f"✅ Saved {len(library.entries)} prompts ({len(library.enabled())} enabled)."
        warnings = library.warnings(self.count_tokens())
        if warnings:
            message += "".join(f"\n\n⚠️ {w[0].upper()}{w[1:]}" for w in warnings)
        return library, message

    def add(self, table: Any, template: str, text: str) -> tuple[PromptLibrary, str]:
        return self.save(table_rows(table) + [[text, True]], template)

    def delete(self, table: Any, template: str, row: int | None) -> tuple[PromptLibrary, str]:
        rows = table_rows(table)
        if row is None or not 0 <= int(row) < len(rows):
            raise BadArgumentError("No row selected: click a row of the table first, then Delete.")
        return self.save(rows[:int(row)] + rows[int(row) + 1:], template)

    def reset(self) -> tuple[PromptLibrary, str]:
        library = PromptLibrary.default()
        return self.save(library_to_table(library), library.template)

    def import_file(self, path: str | Path | None) -> tuple[PromptLibrary, str]:
        if not path:
            raise BadPromptError("No file given: choose a .json or .toml prompt library.")
        library = PromptLibrary.load(path)
        return self.save(library_to_table(library), library.template)

    def download(self, fmt: str) -> Path:
        """The stored library written as JSON or TOML (the prompts/ format), for the browser to download."""
        self.downloads.mkdir(parents=True, exist_ok=True)
        target = self.downloads / f"prompt-library.{'toml' if str(fmt).upper() == 'TOML' else 'json'}"
        self.library().save(target)
        return target
