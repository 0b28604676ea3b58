"""Class names for the label scorer: what each class folder is called in words.

CLIP is asked whether an image shows "a photo of a golden retriever", so every label (a class folder name) needs a
name in words. :func:`class_names` takes it from the folder (``golden_retriever`` -> ``golden retriever``, see
:func:`name_from_label`) unless a mapping names it; :func:`load_class_mapping` reads such a mapping from a file
(ImageNet-style ``n01440764 tench`` lines, JSON or CSV), with a one-line error that names the file, the line and the
remedy when it is bad.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import BadArgumentError

__all__ = ["MAPPING_SUFFIXES", "class_names", "load_class_mapping", "name_from_label"]

log = logging.getLogger(__name__)

MAPPING_SUFFIXES = (".txt", ".json", ".csv")
_WORDNET_ID = re.compile(r"^n\d{8}$")


def name_from_label(label: str) -> str:
    """A class folder name as words: underscores and dashes become spaces (``sea-lion`` -> ``sea lion``)."""
    name = " ".join(re.sub(r"[_\-]+", " ", label).split())
    return name or label


def _clean_name(name: str) -> str:
    return " ".join(name.replace("_", " ").split())


def class_names(labels: Iterable[str], mapping: Mapping[str, str] | str | Path | None = None) -> dict[str, str]:
    """``{label: class name}`` for the dataset's labels, in their order (duplicates once).

    ``mapping`` (a dict, or a file read with :func:`load_class_mapping`) names the labels it contains; the others
    are named from the label (:func:`name_from_label`). A mapping may name more labels than the dataset has.
    """
    if isinstance(mapping, (str, Path)):
        mapping = load_class_mapping(mapping)
    mapping = dict(mapping or {})
    names: dict[str, str] = {}
    for label in labels:
        if label not in names:
            names[label] = mapping[label] if label in mapping else name_from_label(label)
    unnamed = [label for label in names if label not in mapping and _WORDNET_ID.match(label)]
    if unnamed:
        log.warning(
            "%d class folders look like ImageNet ids (%s) and have no name: CLIP scores them as the id itself; pass a "
            "class mapping file (e.g. LOC_synset_mapping.txt)", len(unnamed), ", ".join(unnamed[:3]))
    return names


def load_class_mapping(path: str | Path) -> dict[str, str]:
    """Read a ``{class folder: class name}`` mapping file; raises :class:`BadArgumentError` (one line) if it is bad.

    * ``.txt``: one ``FOLDER NAME`` per line, split at the first space or tab (``n01440764 tench``); where the name
      lists synonyms separated by commas (ImageNet's ``LOC_synset_mapping.txt``: ``tench, Tinca tinca``), the first
      is used. Blank lines and lines starting with ``#`` are skipped.
    * ``.json``: an object ``{"n01440764": "tench", ...}``, or ``{"0": ["n01440764", "tench"], ...}``
      (``imagenet_class_index.json``).
    * ``.csv``: two columns, folder and name (a header row is harmless: it names no folder).

    Underscores in names become spaces (``great_white_shark`` -> ``great white shark``).
    """
    path = Path(path)
    remedy = ("pass a .txt file of 'FOLDER NAME' lines (e.g. 'n01440764 tench'), a JSON object of folder -> name, "
              "or a two-column CSV")
    if path.suffix.lower() not in MAPPING_SUFFIXES:
        raise BadArgumentError(f"Class mapping file '{path}' has an unsupported extension '{path.suffix}'; {remedy}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadArgumentError(f"Class mapping file '{path}' does not exist; {remedy}.") from None
    except UnicodeDecodeError:
        raise BadArgumentError(
            f"Class mapping file '{path}' is not UTF-8 text; save it as UTF-8 and try again.") from None
    except OSError as exc:
        raise BadArgumentError(
            f"Class mapping file '{path}' cannot be read ({exc.strerror or exc}); {remedy}.") from None

    pairs: list[tuple[str, str, str]] = []  # (folder, name, where)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            name = parts[1].split(",")[0].strip() if len(parts) == 2 else ""
            if not name:
                raise BadArgumentError(
                    f"Class mapping file '{path}', line {number} ({line[:40]!r}), has no name after the folder; "
                    "write one 'FOLDER NAME' pair per line (e.g. 'n01440764 tench').")
            pairs.append((parts[0], name, f"line {number}"))
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadArgumentError(
                f"Class mapping file '{path}' is not valid JSON ({exc.msg} at line {exc.lineno}); {remedy}.") from None
        if not isinstance(data, dict):
            raise BadArgumentError(f"Class mapping file '{path}' holds a JSON {type(data).__name__}, not an object; "
                                   f"{remedy}.")
        for key, value in data.items():
            if isinstance(value, str):
                pairs.append((key, value, f"key {key!r}"))
            elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
                pairs.append((value[0], value[1], f"key {key!r}"))  # imagenet_class_index.json: index -> [id, name]
            else:
                raise BadArgumentError(
                    f"Class mapping file '{path}', key {key!r}, maps to {json.dumps(value)[:40]}; give each folder a "
                    "name string (or an [id, name] pair, as imagenet_class_index.json does).")
    else:
        for number, row in enumerate(csv.reader(text.splitlines()), 1):
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            if len(cells) != 2 or not all(cells):
                raise BadArgumentError(
                    f"Class mapping file '{path}', line {number}, has {len(cells)} column(s) {cells[:3]}; write two "
                    "columns per row: folder, name.")
            pairs.append((cells[0], cells[1], f"line {number}"))

    mapping: dict[str, str] = {}
    for folder, name, where in pairs:
        name = _clean_name(name)
        if not folder.strip() or not name:
            raise BadArgumentError(f"Class mapping file '{path}', {where}, has an empty folder or name; {remedy}.")
        if mapping.get(folder, name) != name:
            raise BadArgumentError(f"Class mapping file '{path}', {where}, names folder {folder!r} twice "
                                   f"({mapping[folder]!r} and {name!r}); keep one name per folder.")
        mapping[folder] = name
    if not mapping:
        raise BadArgumentError(f"Class mapping file '{path}' has no entries; {remedy}.")
    return mapping
