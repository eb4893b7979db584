"""Checks for constructor options: each refuses a bad value at construction, with
one message that names the option (a value taken and failing later fails far from
its cause: a bare comparison ``TypeError``, a timer that never fires, a traceback
per event)."""

from __future__ import annotations

import math
from typing import Any


def positive(name: str, value: object, *, none: bool = False, hint: str = "") -> None:
    """A finite number above 0 (or ``None`` when ``none``). NaN and infinities are
    refused: a timer set with either never fires."""
    if value is None and none:
        return
    allowed = "a positive number or None" if none else "a positive number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {allowed}, got {value!r}{hint}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def at_least(name: str, value: object, minimum: float, *, infinite: bool = False) -> None:
    """A finite number of at least ``minimum`` (or infinity, "never", when ``infinite``)."""
    allowed = f"a number of at least {minimum:g}" + (" (inf: never)" if infinite else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if not ((math.isfinite(value) or (infinite and value > 0)) and value >= minimum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def count(name: str, value: object, minimum: int, *, none: bool = False) -> None:
    """An int of at least ``minimum`` (or ``None`` when ``none``)."""
    if value is None and none:
        return
    allowed = f"an int of at least {minimum}" + (" or None" if none else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def instance(name: str, value: object, kind: type[Any], *, none: bool = True) -> None:
    """An instance of ``kind`` (or ``None`` when ``none``)."""
    if (value is None and none) or isinstance(value, kind):
        return
    allowed = f"a {kind.__name__}" + (" or None" if none else "")
    raise TypeError(f"{name} must be {allowed}, got {type(value).__name__}")


def function(name: str, value: object) -> None:
    """A callable, or ``None``."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a callable or None, got {type(value).__name__}")
