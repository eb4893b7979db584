"""Keeping secrets (tokens, session ids) out of logs and reprs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_KEYS = frozenset(
    {"token", "session_id", "password", "secret", "authorization", "api_key", "access_token"}
)
"""Keys whose values are replaced by :data:`REDACTED` (compared case-insensitively)."""

REDACTED = "<redacted>"


def redact(value: Any, secret_keys: frozenset[str] = SECRET_KEYS) -> Any:
    """A copy of a JSON-like value with every secret key's value replaced."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED if str(key).lower() in secret_keys else redact(item, secret_keys)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item, secret_keys) for item in value]
    return value


def redact_url(url: str) -> str:
    """``url`` with user info and the values of secret-looking query keys removed."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = [
        (key, REDACTED if key.lower() in SECRET_KEYS or "key" in key.lower() else value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="<>"), ""))
