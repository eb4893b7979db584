"""Checks for constructor options: each refuses a bad value at construction, with
one message that names the option (a value taken and failing later fails far from
its cause: a bare comparison ``TypeError``, a timer that never fires, a traceback
per event)."""

from __future__ import annotations

import math
import numbers
from decimal import Decimal
from typing import Any

_DECIMAL = " (a Decimal does not mix with the event loop's float clock: pass float(...))"


def _real(name: str, value: object, allowed: str, hint: str = "") -> float:
    """``value`` as a float: any real number (int, float, Fraction, numpy's), not a bool."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # a Fraction or an int beyond a float
            return math.inf
    hint = _DECIMAL if isinstance(value, Decimal) else hint
    raise TypeError(f"{name} must be {allowed}, got {value!r}{hint}")


def positive(name: str, value: object, *, hint: str = "") -> float:
    """A finite number above 0, as a float. NaN and infinities are refused: a timer
    set with either never fires."""
    return _positive(name, value, "a positive number", hint)


def positive_or_none(name: str, value: object) -> float | None:
    """:func:`positive`, or ``None``."""
    return None if value is None else _positive(name, value, "a positive number or None")


def _positive(name: str, value: object, allowed: str, hint: str = "") -> float:
    seconds = _real(name, value, allowed, hint)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return seconds


def at_least(name: str, value: object, minimum: float, *, infinite: bool = False) -> float:
    """A finite number of at least ``minimum``, as a float (or infinity, "never",
    when ``infinite``)."""
    allowed = f"a number of at least {minimum:g}" + (" (inf: never)" if infinite else "")
    number = _real(name, value, allowed)
    if not ((math.isfinite(number) or (infinite and number > 0)) and number >= minimum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return number


def wait(name: str, value: object) -> float | None:
    """A call's ``timeout`` in seconds (below 0 is 0, as for asyncio's: a deadline
    already past), or ``None`` (or infinity) for none. NaN would wait for ever unseen;
    a string failed in a comparison deep inside."""
    if value is None:
        return None
    allowed = "a number or None"
    seconds = _real(name, value, allowed)
    if math.isnan(seconds):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return None if seconds == math.inf else max(0.0, seconds)


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
