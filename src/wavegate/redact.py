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


_SECRET_NAME_PARTS = (
    "token",
    "secret",
    "password",
    "key",
    "auth",
    "cookie",
    "session",
    "signature",
    "credential",
)
_SECRET_NAMES = frozenset({"sig", "jwt", "pwd", "pass", "passwd", "ticket"})
"""Short names matched whole: as parts they would hide ``design=`` or ``compass=``."""


def is_secret_name(name: str) -> bool:
    """Whether a query key or header name looks like it carries a secret."""
    lowered = name.lower()
    return (
        lowered in SECRET_KEYS
        or lowered in _SECRET_NAMES
        or any(part in lowered for part in _SECRET_NAME_PARTS)
    )


def _userinfo(url: str) -> str:
    """A URL's user info, never failing. When the parser would misread a password (see
    :func:`misparsed`), what may be one: all before the last ``@`` after the scheme
    (the port did not parse), or after the host's ``:`` (it did), which only means
    more may be redacted."""
    _, sep, rest = url.partition("://")
    before_at, at, _ = rest.rpartition("@")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError
    except ValueError:
        return before_at if sep and at else ""
    if misparsed(url):  # the "port" and what follows, up to the @
        port = parts.netloc.rpartition(":")[2]
        return port + rest[len(parts.netloc) :].rpartition("@")[0]
    return parts.netloc.rpartition("@")[0]


def misparsed(url: str) -> bool:
    """Whether the URL parser may have read a password as a host, a port and a path:
    one with ``/``, ``?`` or ``#`` in it, not percent-encoded, cuts the user info short
    (``ws://bot:1234/pw@host/`` parses as host ``bot``, port 1234, path ``/pw@host/``).
    Then the port does not parse, or the host has a ``:`` and an ``@`` follows it. A
    URL with ``@`` in its path and no port (``wss://host/@alice/feed``) is not one."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError
    except ValueError:
        return "@" in url
    if "@" in parts.netloc or ":" not in parts.netloc.rpartition("]")[2]:
        return False
    if "@" in parts.path:
        # Only ``/users/@alice``, an @ opening a segment after the first, is a path's
        # own: ``/pw@host`` and ``/@host`` (a password ``1234/``) may be passwords.
        segments = parts.path.split("/")
        return any(
            "@" in segment and not (i > 1 and segment.startswith("@"))
            for i, segment in enumerate(segments)
        )
    if "@" in parts.query:  # ``?user=a@b.c`` is a query's own; ``?pw@host`` is not
        return "=" not in parts.query.partition("@")[0]
    return "@" in parts.fragment


def ambiguous(url: str) -> bool:
    """Whether a URL certainly holds a password the parser misreads: an empty port
    before an ``@`` (``ws://bot:/pw@host/``, ``ws://bot:?pw@host/``), which no real
    URL has. Connecting would send the password to ``bot``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError
    except ValueError:
        return False
    return misparsed(url) and parts.netloc.endswith(":")


def redact_url(url: str) -> str:
    """``url`` with user info and the values of secret-looking query keys removed. A
    URL that does not parse shows as ``scheme://<redacted>@`` and what follows its last
    ``@`` up to a ``?`` or ``#`` (a password may hold ``/ ? #``, not ``@``); one the
    parser may misread (see :func:`misparsed`) as its host, nothing after."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError
    except ValueError:
        scheme, sep, rest = url.partition("://")
        _, at, host_and_path = rest.rpartition("@")
        host_and_path = host_and_path.split("?", 1)[0].split("#", 1)[0]
        userinfo = f"{REDACTED}@" if at else ""
        shown = f"{scheme}://{userinfo}{host_and_path}" if sep else REDACTED
    else:
        if misparsed(url):  # the "port" may be a password's first characters too
            host = parts.hostname or ""
            host = f"[{host}]" if ":" in host else host
            shown = f"{parts.scheme}://{host}:{REDACTED}/{REDACTED}"
        else:
            netloc = parts.netloc.rsplit("@", 1)[-1]
            query = [
                (key, REDACTED if is_secret_name(key) else value)
                for key, value in parse_qsl(parts.query, keep_blank_values=True)
            ]
            # As given when it holds nothing secret: re-encoded, it would not read as sent.
            secret = any(value == REDACTED for _, value in query)
            query_text = urlencode(query, safe="<>") if secret else parts.query
            shown = urlunsplit((parts.scheme, netloc, parts.path, query_text, ""))
    return scrub_text(shown, secrets_in((url,), {}))


_PARSER_PROBLEMS = (
    ("Port out of range", "its port is out of range (0-65535)"),
    ("Port could not be cast", "its port is not a number"),
    ("Invalid IPv6 URL", "its IPv6 address is not closed with ]"),
)


def url_problem(exc: ValueError, url: str = "") -> str:
    """What the URL parser found wrong, in words of our own: its messages quote pieces
    of the URL, which may be pieces of a password."""
    text = str(exc)
    why = next((ours for theirs, ours in _PARSER_PROBLEMS if text.startswith(theirs)), "")
    why = why or "it does not parse as a URL"
    if "@" in url:
        why += " (a password with /, ?, # or @ in it must be percent-encoded)"
    return why


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
