"""Argument checks shared by the engine, the workspace and the command line: a whole number, a name, a size.

Every check returns the value in its canonical type or raises :class:`BadArgumentError` (or the error type the
caller names) with one sentence that names the argument, the value and what to pass instead.
"""

from __future__ import annotations

import unicodedata
from numbers import Integral

from .errors import BadArgumentError, DiffuseMixError

__all__ = ["check_int", "check_name", "format_duration", "format_size", "is_unsafe_char"]

# Unicode categories a name (a class label, a prompt) must not hold: control characters (NUL, newline, tab),
# format characters (the direction overrides U+202A-U+202E and U+2066-U+2069, zero-width characters), surrogates,
# private-use characters, and the line and paragraph separators. They are invisible or change how text around
# them is shown, so two names that look the same could differ, and a file name could show reversed.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def check_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int if it is an integer (not a bool, not a float) within [minimum, maximum], else
    BadArgumentError."""
    whole = isinstance(value, Integral) and not isinstance(value, bool)
    if whole and (minimum is None or int(value) >= minimum) and (maximum is None or int(value) <= maximum):
        return int(value)
    if minimum is not None and maximum is not None:
        bounds = f"from {minimum} to {maximum}"
    elif minimum is not None:
        bounds = f">= {minimum}"
    elif maximum is not None:
        bounds = f"<= {maximum}"
    else:
        bounds = ""
    raise BadArgumentError(f"Bad {name} {value!r}: pass a whole number {bounds}.".replace("  ", " ").replace(" .", "."))


def is_unsafe_char(ch: str) -> bool:
    """Whether the character `ch` is one a name must not hold (see UNSAFE_CATEGORIES)."""
    return unicodedata.category(ch) in UNSAFE_CATEGORIES


def check_name(what: str, value: str, *, error: type[DiffuseMixError] = BadArgumentError) -> str:
    """`value` in Unicode NFC if it holds no unsafe character (:func:`is_unsafe_char`), else `error`.

    The one rule for names people type or a folder gives (class labels, prompts): the message names the
    character by its code point and Unicode name, and where it is.
    """
    text = unicodedata.normalize("NFC", value)
    for position, ch in enumerate(text):
        if is_unsafe_char(ch):
            name = unicodedata.name(ch, "a control character")
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise error(f"{what} {shown!r} holds U+{ord(ch):04X} ({name}) at character {position + 1}, which "
                        "is invisible or changes how the text is shown; remove it and write the text on one line.")
    return text


def format_size(n: int | float) -> str:
    """A byte count for people: 512 B, 5.0 MB, 1.2 GB (powers of 1000, as disks and quotas are sold)."""
    if abs(n) < 1000:
        return f"{n:.0f} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if abs(round(value, 1)) < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} TB"


def format_duration(seconds: float | None) -> str:
    """Seconds in words: 0.031 s, 4.2 s, 3m05s, 2h07m, 3d04h."""
    if seconds is None:
        return "unknown"
    if seconds < 10:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
