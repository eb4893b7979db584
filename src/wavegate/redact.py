"""Keeping secrets (tokens, session ids) out of logs and reprs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

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


_SECRET_NAME_PARTS = ("token", "secret", "password", "key", "auth", "cookie", "session")


def is_secret_name(name: str) -> bool:
    """Whether a query key or header name looks like it carries a secret."""
    lowered = name.lower()
    return lowered in SECRET_KEYS or any(part in lowered for part in _SECRET_NAME_PARTS)


def _userinfo(url: str) -> str:
    """A URL's user info, never failing. When the URL does not parse (a password with
    an unescaped ``/``, ``?`` or ``#`` makes a "port" of it), all before the last ``@``
    after the scheme: more than the user info, perhaps, which only means more is
    redacted."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        _, sep, rest = url.partition("://")
        userinfo, at, _ = rest.rpartition("@")
        return userinfo if sep and at else ""
    return parts.netloc.rpartition("@")[0]


def redact_url(url: str) -> str:
    """``url`` with user info and the values of secret-looking query keys removed
    (a URL too malformed to parse loses its whole query)."""
    try:
        parts = urlsplit(url)
        # A "port" the parser cannot read: a password with /, ? or # in it cut the URL
        # short, and what it shows as the host is a piece of the password.
        parts.port  # noqa: B018 - raises ValueError
        netloc = parts.netloc.rsplit("@", 1)[-1]
        query = [
            (key, REDACTED if is_secret_name(key) else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        shown = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="<>"), ""))
    except ValueError:
        # All after the last "@" is host and path: a password may hold / ? # but no @.
        scheme, sep, rest = url.partition("://")
        host_and_path = rest.rpartition("@")[2].split("?", 1)[0].split("#", 1)[0]
        shown = f"{scheme}://{host_and_path}" if sep else host_and_path
    # Whatever a malformed URL made the parser take for a host or a path.
    return scrub_text(shown, secrets_in((url,), {}))


def url_problem(exc: ValueError) -> str:
    """What the URL parser found wrong, in words that quote nothing of the URL (its
    message quotes the piece it took for a port, which may be part of a password)."""
    text = str(exc)
    if "out of range" in text:
        return "its port is out of range (0-65535)"
    if "port" in text.lower():
        return "its port is not a number (a password with /, ? or # in it must be percent-encoded)"
    return re.sub(r"'[^']*'", "'...'", text)


def secrets_in(urls: Iterable[str | None], headers: Mapping[str, str]) -> frozenset[str]:
    """The secrets a connection carries: URL user info, secret-looking query values and
    header values, each also as it looks percent-encoded."""
    found: set[str] = set()
    for url in urls:
        if not url:
            continue
        userinfo = _userinfo(url)
        if userinfo:
            found.add(userinfo)
            found.update(re.split(r"[:/?#]", userinfo))
        query = url.split("?", 1)[1].split("#", 1)[0] if "?" in url else ""
        found.update(
            value for key, value in parse_qsl(query, keep_blank_values=True) if is_secret_name(key)
        )
    for name, value in headers.items():
        if is_secret_name(name):
            found.add(value)
            found.update(value.split())  # "Bearer abc": the token alone may be shown
    found = {secret for secret in found if len(secret) >= 4}
    return frozenset(found | {quote(s, safe="") for s in found} | {quote_plus(s) for s in found})


def scrub_text(text: str, secrets: frozenset[str]) -> str:
    """``text`` with every occurrence of each secret replaced by :data:`REDACTED`."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub_exception(
    exc: BaseException | None, secrets: frozenset[str], stand_in: type[BaseException]
) -> BaseException | None:
    """``exc`` with its cause and context chain scrubbed of ``secrets``.

    An exception whose text holds a secret is replaced by a ``stand_in`` carrying its
    type name and scrubbed text (and its traceback); the others are kept, with their
    ``__cause__``/``__context__`` scrubbed in turn.
    """
    if exc is None or not secrets:
        return exc
    return _scrub(exc, secrets, stand_in, set())


def _scrub(
    exc: BaseException, secrets: frozenset[str], stand_in: type[BaseException], seen: set[int]
) -> BaseException:
    seen.add(id(exc))
    cause, context = exc.__cause__, exc.__context__
    if cause is not None and id(cause) not in seen:
        cause = _scrub(cause, secrets, stand_in, seen)
    if context is not None and id(context) not in seen:
        context = _scrub(context, secrets, stand_in, seen)
    try:
        text = f"{exc}\n{exc!r}"
    except Exception:  # a broken __str__ must not hide the ending
        text = type(exc).__name__
    if any(secret in text for secret in secrets):
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        replaced = stand_in(f"{name}: {scrub_text(str(exc), secrets)}")
        replaced.__traceback__ = exc.__traceback__
        replaced.__suppress_context__ = exc.__suppress_context__
        exc = replaced
    exc.__cause__, exc.__context__ = cause, context
    return exc
