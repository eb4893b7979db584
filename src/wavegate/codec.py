"""JSON codecs: orjson when installed, the standard library otherwise."""

from __future__ import annotations

import json
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
"""The standard library's ``json`` module."""

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    ORJSON: JSONCodec | None = None
    DEFAULT: JSONCodec = STDLIB
else:
    ORJSON = JSONCodec("orjson", orjson.loads, orjson.dumps)
    DEFAULT = ORJSON
