"""JSON codecs: orjson when installed, the standard library otherwise."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JSONCodec:
    """A pair of JSON functions.

    ``loads`` must accept ``bytes`` (UTF-8) and ``str``; ``dumps`` may return either
    ``bytes`` (sent as-is, no re-encoding) or ``str``.
    """

    name: str
    loads: Callable[[bytes | str], Any]
    dumps: Callable[[Any], bytes | str]


def _stdlib_dumps(value: Any) -> str:
    # allow_nan=False: NaN/Infinity are not JSON and a strict server rejects them.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


STDLIB = JSONCodec("json", json.loads, _stdlib_dumps)


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(item) for item in value)
    return False


"""The standard library's ``json`` module."""

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    ORJSON: JSONCodec | None = None
    DEFAULT: JSONCodec = STDLIB
else:

    def _orjson_dumps(value: Any) -> bytes:
        encoded = orjson.dumps(value)
        # orjson writes NaN and infinities as null, silently; JSON has no such values.
        # Only a payload with a null can hide one, so only then is it walked.
        if b"null" in encoded and _has_non_finite(value):
            raise ValueError("NaN and infinities cannot be encoded as JSON")
        return encoded

    ORJSON = JSONCodec("orjson", orjson.loads, _orjson_dumps)
    DEFAULT = ORJSON
