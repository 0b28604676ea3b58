"""Argument checks shared by the engine, the workspace and the command line: one way to say "a whole number".

Every check returns the value in its canonical type or raises :class:`BadArgumentError` with one sentence that
names the argument, the value and what to pass instead.
"""

from __future__ import annotations

from numbers import Integral

from .errors import BadArgumentError

__all__ = ["check_int"]


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
