"""Class labels: how a label is read, what folder it becomes, and which labels collide on the way.

* :func:`read_label`: a label as the workspace keeps it, in Unicode NFC. A class folder ``café`` written by macOS
  (NFD: ``e`` + combining accent) and one written elsewhere (NFC: ``é``) look identical and are one class.
* :func:`sanitize_label`: a label (any Unicode text) as one safe folder name; :func:`label_folders` gives every
  label of an export its own folder and reports the labels that collided (:class:`LabelCollision`): spellings
  read as one class, and labels that would share a folder (``cat`` and ``CAT`` on a case-insensitive disk), with
  the names they got. The run summary and the export's message show :meth:`LabelFolders.notes`.

The characters a label must not carry into a folder name are the ones :func:`checks.is_unsafe_char` names for every
name of the project (prompts too).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Iterable

from ..checks import is_unsafe_char

__all__ = ["UNLABELLED", "LabelCollision", "LabelFolders", "label_folders", "read_label", "sanitize_label"]

UNLABELLED = "unlabelled"  # the stored label of an image that came without one (an app upload)
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_FORBIDDEN_CHARS = set('/\\<>:"|?*')
_MAX_NAME_BYTES = 180


def read_label(label: str | None) -> str | None:
    """A label as the workspace keeps and compares it: Unicode NFC (None stays None)."""
    return None if label is None else unicodedata.normalize("NFC", str(label))


def sanitize_label(label: str | None) -> str:
    """A single safe folder name for `label`: keeps Unicode letters and spaces, drops what a filesystem forbids.

    Path separators, ``<>:"|?*`` and the unsafe characters of :func:`checks.is_unsafe_char` (NUL, control and
    direction characters) become ``_``; leading/trailing dots and spaces are stripped (no hidden folders, no
    ``..``); Windows reserved names get a ``_`` prefix; the result is in NFC, cut to 180 UTF-8 bytes and never empty.
    """
    text = read_label(UNLABELLED if label is None else label)
    name = "".join("_" if ch in _FORBIDDEN_CHARS or is_unsafe_char(ch) else ch for ch in text).strip(" .")
    if not name or set(name) <= {"_", "."}:
        name = "_" + name if name else "_"
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    encoded = name.encode("utf-8")
    if len(encoded) > _MAX_NAME_BYTES:
        name = encoded[:_MAX_NAME_BYTES].decode("utf-8", errors="ignore").rstrip(" .") or "_"
    return name


@dataclass(frozen=True)
class LabelCollision:
    """Labels that collided: `labels` as given, and `names`, what each became (same order).

    `merged`: the labels are spellings of one text in different Unicode forms and became one class (`names`
    repeats it); otherwise they are different labels that would share a folder and got suffixed folder names.
    """

    labels: tuple[str, ...]
    names: tuple[str, ...]
    merged: bool

    def describe(self) -> str:
        """One sentence for a summary or a message."""
        given = ", ".join(repr(label) for label in self.labels)
        if self.merged:
            forms = ", ".join(f"{label!r} ({_form(label)})" for label in self.labels)
            return (f"labels {forms} are the same text in different Unicode forms (e.g. class folders written on "
                    f"macOS and elsewhere): read as one class {self.names[0]!r}.")
        named = ", ".join(f"{label!r} -> {name!r}" for label, name in zip(self.labels, self.names))
        return (f"labels {given} would share a folder (they differ only in case or in characters a folder name "
                f"cannot hold), so they are named {named}; rename the class folders if they are one class.")


def _form(text: str) -> str:
    for form in ("NFC", "NFD"):
        if unicodedata.is_normalized(form, text):
            return form
    return "mixed forms"


@dataclass
class LabelFolders:
    """What :func:`label_folders` found: the folder of every label given, and the collisions on the way."""

    folders: dict[str, str]
    collisions: list[LabelCollision] = field(default_factory=list)

    def __getitem__(self, label: str) -> str:
        return self.folders[label]

    def notes(self) -> list[str]:
        """One sentence per collision (empty when every label kept its own name)."""
        return [collision.describe() for collision in self.collisions]


def label_folders(labels: Iterable[str]) -> LabelFolders:
    """Give each label a sanitised folder name, unique case-insensitively (case-insensitive filesystems).

    Labels are read in NFC first (:func:`read_label`), so spellings of one text share a folder (a ``merged``
    collision); different labels whose folder names clash keep the first (in sorted order) and suffix the others
    ``_2``, ``_3``, ... (a renaming collision). Either is listed in ``collisions``.
    """
    spellings: dict[str, list[str]] = {}
    for label in sorted(set(labels)):
        spellings.setdefault(read_label(label), []).append(label)
    collisions = [LabelCollision(tuple(given), (text,) * len(given), True)
                  for text, given in spellings.items() if len(given) > 1]
    owner: dict[str, str] = {}  # folder name (casefolded) -> the label text that has it
    by_text: dict[str, str] = {}
    clashes: dict[str, list[str]] = {}  # the label holding a folder name -> the labels renamed because of it
    for text in sorted(spellings):
        base = sanitize_label(text)
        name, n = base, 2
        while name.casefold() in owner:
            name = f"{base}_{n}"
            n += 1
        owner[name.casefold()] = text
        by_text[text] = name
        if name != base:
            clashes.setdefault(owner[base.casefold()], []).append(text)
    for holder, renamed in clashes.items():
        group = (holder, *renamed)
        collisions.append(LabelCollision(group, tuple(by_text[t] for t in group), False))
    folders = {label: by_text[text] for text, given in spellings.items() for label in given}
    return LabelFolders(folders=folders, collisions=collisions)
