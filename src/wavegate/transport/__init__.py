"""The transport seam: the only place that knows which websocket library is used.

A transport moves frames. It reports every way a connection ends by raising
:class:`TransportClosed` (after a connection opened) or :class:`ConnectFailed` (while
opening), each carrying an :class:`~wavegate.signals.Event`; ``Websocket`` turns those
into signals with its policy. Bad input is reported as
:class:`~wavegate.signals.InvalidURLError` (a ``ValueError``). No transport-library
exception crosses this seam except as ``__cause__``.
"""

from __future__ import annotations

import datetime
import email.utils
import re
import socket
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from .. import _checks as checks
from ..packets import WebsocketPacket
from ..redact import misparsed, redact_url, url_problem
from ..signals import Event

_TCP_INFO = getattr(socket, "TCP_INFO", None)  # Linux
_TCP_ESTABLISHED = 1

TEXT = 1
"""Frame kind of a text frame (its RFC 6455 opcode)."""
BINARY = 2
"""Frame kind of a binary frame (its RFC 6455 opcode)."""


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """Connection options every transport honours (see ``Websocket`` for meanings):
    the one place their defaults and their checks live."""

    open_timeout: float | None = 10.0
    close_timeout: float = 5.0
    ping_interval: float | None = 20.0
    ping_timeout: float = 20.0
    max_size: int | None = 1 << 20
    headers: Mapping[str, str] = field(default_factory=dict)
    ssl: ssl_module.SSLContext | bool = True
    proxy: str | None = None
    compression: bool = False
    read_buffer_size: int = 4096
    subprotocols: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("open_timeout", "ping_interval"):
            object.__setattr__(self, name, checks.positive_or_none(name, getattr(self, name)))
        if self.ping_interval is None and self.ping_timeout is None:
            # The keepalive is off: no timeout to keep (the default, so the type holds).
            object.__setattr__(self, "ping_timeout", 20.0)
        for name in ("close_timeout", "ping_timeout"):
            hint = ""
            if name == "ping_timeout" and self.ping_timeout is None:
                hint = " (to turn the keepalive off, pass ping_interval=None)"
            object.__setattr__(self, name, checks.positive(name, getattr(self, name), hint=hint))
        if isinstance(self.max_size, float) and self.max_size.is_integer():
            object.__setattr__(self, "max_size", int(self.max_size))  # 1e6, say
        if self.max_size is not None:
            if isinstance(self.max_size, bool) or not isinstance(self.max_size, int):
                raise TypeError(f"max_size must be an int (bytes) or None, got {self.max_size!r}")
            if not 1 <= self.max_size <= MAX_MESSAGE:
                raise ValueError(
                    f"max_size must be a positive int up to 2**62, or None, got {self.max_size!r}"
                )
        if not isinstance(self.compression, bool):
            raise TypeError(f"compression must be True or False, got {self.compression!r}")
        # A copy: the caller's dict may change after, and the check must still hold.
        object.__setattr__(self, "headers", _checked_headers(self.headers))
        object.__setattr__(self, "subprotocols", _checked_subprotocols(self.subprotocols))
        if self.proxy is not None:
            _check_proxy(self.proxy)
        if not isinstance(self.ssl, (bool, ssl_module.SSLContext)):
            raise TypeError(
                "ssl must be True (verify), False (do not verify) or an ssl.SSLContext, "
                f"got {self.ssl!r}"
            )
        size = self.read_buffer_size
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"read_buffer_size must be an int (bytes), got {size!r}")
        if not MIN_READ_BUFFER <= size <= MAX_READ_BUFFER:
            raise ValueError(
                f"read_buffer_size must be in {MIN_READ_BUFFER}..{MAX_READ_BUFFER}, got {size}"
            )


MAX_MESSAGE = 1 << 62
"""The largest ``max_size`` taken: picows keeps it in a C ``ssize_t``."""
MIN_READ_BUFFER = 2048
"""picows' smallest read buffer, in bytes."""
MAX_READ_BUFFER = 1 << 24
"""The largest first read buffer taken (16 MiB): every connection holds it for life."""


def _check_proxy(proxy: object) -> None:
    """Refuse a proxy that is not an ``http://`` or ``https://`` URL with a host, in
    words that never show its password (a transport's own error would quote it)."""
    if not isinstance(proxy, str):
        raise TypeError(
            f"proxy must be a str (an http:// or https:// URL) or None, got {type(proxy).__name__}"
        )
    scheme = proxy.partition("://")[0].lower() if "://" in proxy else ""
    shown = redact_url(proxy) if scheme else proxy.rpartition("@")[2]
    if scheme not in ("http", "https"):
        instead = f", not {scheme}" if scheme else ""
        raise ValueError(f"proxy must be an http:// or https:// URL{instead}: {shown!r}")
    try:
        parts = urlsplit(proxy)
        host, _ = parts.hostname, parts.port
    except ValueError as exc:
        raise ValueError(f"proxy is malformed, {url_problem(exc, proxy)}: {shown!r}") from None
    if misparsed(proxy):  # a proxy URL has no path or query of its own
        raise ValueError(
            "proxy is malformed, an @ follows its host (a password with /, ?, # or @ in it "
            f"must be percent-encoded): {shown!r}"
        )
    if not host:
        raise ValueError(f"proxy has no host: {shown!r}")


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


_RESERVED = {
    "sec-websocket-protocol": "pass subprotocols=[...] instead",
    "sec-websocket-extensions": "pass compression=True instead",
    **dict.fromkeys(
        ("sec-websocket-key", "sec-websocket-version", "upgrade", "connection"),
        "the transport writes it",
    ),
}
"""Request headers the transports write themselves: given again, picows sent both (a
server refuses a second key) and aiohttp kept its own unseen."""


def _checked_subprotocols(names: object) -> tuple[str, ...]:
    """``subprotocols`` as a tuple of distinct HTTP tokens (RFC 6455 4.1)."""
    if isinstance(names, (str, bytes)):
        raise TypeError(
            f"subprotocols must be a list of names, got the {type(names).__name__} {names!r}"
            f" (pass [{names!r}])"
        )
    if not isinstance(names, Iterable):
        raise TypeError(f"subprotocols must be a list of names, got {type(names).__name__}")
    taken = tuple(names)
    for name in taken:
        if not isinstance(name, str):
            raise TypeError(f"subprotocol names are str, got {type(name).__name__}")
        if not _TOKEN.fullmatch(name):
            raise ValueError(
                "subprotocol names are HTTP tokens (letters, digits, !#$%&'*+-.^_`|~), "
                f"got {name!r}"
            )
        if taken.count(name) > 1:
            first, second = (i + 1 for i, n in enumerate(taken) if n == name)
            # Not named: a subprotocol may carry a token.
            raise ValueError(f"subprotocols #{first} and #{second} are the same")
    return taken


def chosen_subprotocol(answer: str | None, offered: tuple[str, ...]) -> tuple[str | None, str]:
    """The subprotocol a 101 answer's ``Sec-WebSocket-Protocol`` (``answer``) chose,
    and what is wrong with it (``""``: nothing). RFC 6455 4.1: the server may choose
    none, or exactly one of those offered."""
    if answer is None:
        return None, ""
    if answer.strip() in offered:
        return answer.strip(), ""
    if not offered:
        return None, f"Sec-WebSocket-Protocol {answer!r}, but the client offered no subprotocol"
    # Not named: a subprotocol may carry a token (Kubernetes sends a bearer one so),
    # and a server may echo them all.
    shown = answer
    for number, name in sorted(enumerate(offered, 1), key=lambda pair: -len(pair[1])):
        shown = shown.replace(name, f"<offered #{number}>")
    offers = "the one subprotocol" if len(offered) == 1 else f"the {len(offered)} subprotocols"
    return None, f"Sec-WebSocket-Protocol {shown!r}, not {offers} the client offered"


def _checked_headers(headers: object) -> dict[str, str]:
    """A copy of ``headers`` (a mapping, or pairs), refusing what a transport would
    send broken: picows sent a value's CR LF as is (a header of the caller's making),
    and a non-str value failed inside its callback, so the connect waited out its
    timeout. Values are never shown, nor a name that is not a token: either may hold
    a secret (``"Authorization: Bot ..."`` given as a name)."""
    try:
        if isinstance(headers, (str, bytes)):
            raise TypeError
        copied: dict[str, str] = dict(headers)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise TypeError(
            f"headers must be a mapping of header names to str values, got {type(headers).__name__}"
        ) from None
    for name, value in copied.items():
        if not isinstance(name, str):
            raise TypeError(f"header names must be str, got {type(name).__name__}")
        if not _TOKEN.fullmatch(name):
            where = next(
                (
                    f"has {c!r} at position {i}"
                    for i, c in enumerate(name)
                    if not _TOKEN.fullmatch(c)
                ),
                "is empty",
            )
            raise ValueError(
                f"a header name {where}: names are HTTP tokens (letters, digits, !#$%&'*+-.^_`|~)"
            )
        instead = _RESERVED.get(name.lower())
        if instead is not None:
            raise ValueError(f"header {name!r} is the handshake's own: {instead}")
        if not isinstance(value, str):
            raise TypeError(f"header {name!r} must have a str value, got {type(value).__name__}")
        if _CONTROL.search(value):
            raise ValueError(
                f"header {name!r} has a line break or another control character in its value"
            )
    return copied


class TransportClosed(Exception):
    """An open connection ended; raised by ``recv``, ``writable`` and ``send``.

    A send may see the connection fail before the read side knows why (the peer's
    close frame may still be unread): ``Websocket`` lets the read side decide, within
    ``close_timeout``. The transport sets ``__cause__`` (the library's exception) once,
    when it records the ending; every later report of that ending is the same object.
    """

    def __init__(
        self,
        event: Event,
        code: int | None = None,
        reason: str = "",
        *,
        local: bool = False,
    ) -> None:
        super().__init__(reason)
        self.event = event
        self.code = code
        self.reason = reason
        self.local = local


class ConnectFailed(Exception):
    """Opening failed; ``code`` is the HTTP status for ``HANDSHAKE_STATUS``."""

    def __init__(
        self,
        event: Event,
        code: int | None = None,
        reason: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.event = event
        self.code = code
        self.reason = reason
        self.retry_after = retry_after


REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


MAX_RETRY_AFTER = 3600.0
"""The longest ``Retry-After`` honoured, in seconds: a server asking for more (a
typo, a date in the year 9999) is waited for an hour, not for ever."""


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """An HTTP ``Retry-After`` value (RFC 9110 10.2.3: seconds, or an HTTP date) as
    seconds from ``now`` (a Unix time), from 0 to :data:`MAX_RETRY_AFTER`; ``None``
    for none or nonsense."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # Digits only: no int() of a thousand digits (Python's limit, or a float overflow).
        digits = value.lstrip("0") or "0"
        seconds = float(digits) if len(digits) <= 12 else MAX_RETRY_AFTER
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:  # an HTTP date is GMT; one without a zone is taken so
                when = when.replace(tzinfo=datetime.timezone.utc)
            seconds = when.timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def status_failure(
    status: int, location: str | None = None, retry_after: str | None = None
) -> ConnectFailed:
    """The opening handshake was answered with HTTP ``status`` instead of 101.

    A redirect is never followed, on any transport: following it would send the
    URL's credentials and every header (a bot token) to wherever it points, and a
    gateway that moved is a configuration to fix, not a fault to ride out. Its
    ``Location`` is named, secrets removed. 407 comes from a proxy only (RFC 9110
    15.5.8), even when it answers a request it forwards rather than tunnels."""
    if status == 407:
        return proxy_status_failure(status)
    if status in REDIRECT_STATUSES and location:
        return ConnectFailed(
            Event.HANDSHAKE_STATUS,
            status,
            f"HTTP {status}: a redirect to {redact_url(location)}, not followed "
            "(connect to it directly)",
        )
    wait = retry_after_seconds(retry_after, time.time())
    if wait is None:
        return ConnectFailed(Event.HANDSHAKE_STATUS, status, f"HTTP {status}")
    reason = f"HTTP {status} (Retry-After: {wait:g} s)"
    return ConnectFailed(Event.HANDSHAKE_STATUS, status, reason, retry_after=wait)


PROXY_ANSWERED = "the proxy answered HTTP"
"""How a reason starts when the proxy, not the server, answered with that status."""


def proxy_status_failure(status: int) -> ConnectFailed:
    """The proxy refused to open the tunnel with HTTP ``status`` (407: its credentials)."""
    return ConnectFailed(Event.HANDSHAKE_STATUS, status, f"{PROXY_ANSWERED} {status}")


class Transport(Protocol):
    """One open websocket connection.

    ``recv`` is the hot path and may be the websocket library's own coroutine, with no
    wrapper: whatever it raises is handed to :meth:`ending`, which translates it.

    Sending is split in two so that a frame is either written whole or not at all:
    :meth:`writable` waits (cancellably) until the socket's buffer has room, then
    :meth:`send` writes the frame at once without waiting. Nothing waits after a write.
    """

    subprotocol: str | None
    """The subprotocol the server chose from ``TransportOptions.subprotocols``, if any."""

    @property
    def recv(self) -> Callable[[], Awaitable[str | bytes]]:
        """Wait for the next message: ``str`` for a text frame (valid UTF-8, decoded),
        ``bytes`` for a binary one. Raises when the connection ends (see :meth:`ending`)."""
        ...

    def taker(
        self, loads: Callable[[bytes | str], Any], decode_json: bool
    ) -> Callable[[], WebsocketPacket | None] | None:
        """A function that returns a message the transport already holds, as the packet
        ``Websocket.receive()`` would make of it (``loads`` and ``decode_json`` say how),
        or ``None`` when none has arrived; it never waits and raises only
        :class:`~wavegate.signals.PayloadError`. ``None`` for a transport without a
        buffer of its own: ``recv`` then does all the work."""
        ...

    def taken(self) -> tuple[int, int]:
        """Messages and bytes handed out by the taker so far."""
        ...

    def ending(self, exc: BaseException) -> TransportClosed:
        """The connection's ending, given what ``recv`` raised (a :class:`TransportClosed`)."""
        ...

    async def writable(self) -> None:
        """Wait until the write buffer is below its high-water mark.

        Raises :class:`TransportClosed` if the connection ended. Cancelling it leaves
        nothing written.
        """
        ...

    def send(self, kind: int, data: bytes) -> None:
        """Write one frame (TEXT or BINARY) now, whole; never waits.

        Raises :class:`TransportClosed` (nothing was written) if the connection ended.
        """
        ...

    def hold_keepalive(self, held: bool) -> None:
        """Stop (``True``) or restart (``False``) judging the peer by keepalive pongs:
        while the application deliberately stops reading, the pongs wait unread."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code``, bounded by the close timeout; never raises. The socket is
        released even if the call is cancelled."""
        ...

    async def abort(self) -> None:
        """Drop the connection at once (no close handshake, no flushing) and release it;
        never raises."""
        ...


def socket_established(sock: Any) -> bool:
    """Whether the kernel still has ``sock``'s connection ESTABLISHED (always true off
    Linux). asyncio swallows a write that fails at once (reset, broken pipe); over TLS
    its transport does not even say it is closing until a loop turn later."""
    if _TCP_INFO is None:
        return True
    try:
        return bool(sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 8)[0] == _TCP_ESTABLISHED)
    except OSError:
        return False


def write_lost(transport: Any, sock: Any, tls: bool) -> bool:
    """Whether the write just handed to ``transport`` (an asyncio transport over
    ``sock``) was lost because the connection had already failed.

    asyncio (and aiofastnet, and uvloop) swallow a write whose own ``send`` fails
    (reset, broken pipe), but close the transport at once: ``is_closing()`` says it.
    A write queued behind others makes no ``send``, and over TLS the socket's
    transport learns of a failure only a loop turn later: then the kernel is asked.
    It is not asked after every plain write: a ``getsockopt`` right behind the
    ``send`` cost ~2 µs, more than the rest of a send. A peer that closed (FIN) in
    the same loop turn is not seen, on any transport: its end is read next turn."""
    if transport.is_closing():
        return True
    if tls or transport.get_write_buffer_size():
        return not socket_established(sock)
    return False


Connector = Callable[[str, TransportOptions], Coroutine[Any, Any, Transport]]
"""Opens connections: ``await connector(url, options)``."""


TRANSPORTS = ("aiohttp", "picows")
"""Transport names ``Websocket(transport=...)`` accepts."""


def get_connector(name: str) -> Connector:
    """The connector of the transport called ``name`` (one of :data:`TRANSPORTS`).

    Raises:
        ValueError: an unknown name, or a transport whose library cannot be imported.
    """
    if name == "aiohttp":
        from .aiohttp_transport import connect

        return connect
    if name == "picows":
        try:
            from .picows_transport import connect as connect_picows
        except ImportError as exc:
            raise ValueError(f"transport='picows' cannot be used: {exc}") from exc
        return connect_picows
    raise ValueError(f"unknown transport {name!r}; available: {', '.join(TRANSPORTS)}")


def default_transport(*, compression: bool = False) -> str:
    """The transport ``Websocket`` uses when none is named: picows (the fastest
    measured), or aiohttp when permessage-deflate is asked for (picows has none) or
    picows cannot be imported."""
    if compression:
        return "aiohttp"
    try:
        from . import picows_transport  # noqa: F401
    except ImportError:
        return "aiohttp"
    return "picows"


@dataclass(frozen=True, slots=True)
class TransportInfo:
    """What :func:`transports` reports about one transport."""

    name: str
    """The name ``Websocket(transport=...)`` takes."""
    available: bool
    """Whether its library can be imported."""
    detail: str
    """The library's version and, for picows, which listener runs (``compiled
    listener``, or picows' own connection and why); or why it is unavailable."""
    default: bool
    """Whether ``Websocket()`` uses it when no transport is named (no compression)."""


def transports() -> tuple[TransportInfo, ...]:
    """Every transport, whether it can be used here, and which one is the default."""
    from importlib import metadata

    default = default_transport()
    found = []
    for name in TRANSPORTS:
        try:
            if name == "picows":
                from .picows_transport import describe

                detail = describe()
            else:
                detail = f"aiohttp {metadata.version('aiohttp')}"
        except ImportError as exc:
            found.append(TransportInfo(name, False, f"cannot be imported: {exc}", False))
            continue
        found.append(TransportInfo(name, True, detail, name == default))
    return tuple(found)


_PLAIN_ANSWER = re.compile(
    r"wrong[ _]version[ _]number|record[ _]layer[ _]failure|packet[ _]length[ _]too[ _]long"
    r"|http[ _]request",
    re.IGNORECASE,
)
"""What OpenSSL says when the answer to its hello was not TLS at all."""

_HUNG_UP = re.compile(
    r"unexpected eof|eof occurred|\[None\]|ConnectionResetError|connection reset",
    re.IGNORECASE,
)
"""A server that hung up during the TLS handshake: a plain server may do that too."""


_TLS_EVENTS = (Event.CONNECT_TLS, Event.CONNECT_TLS_CERTIFICATE)


def proxy_hint(proxy: str | None, url: str, event: Event, reason: str) -> str:
    """``reason``, saying it was the proxy when through one the only connection made
    was to it: a refused or unresolved connect (the server's own failures come back
    as the proxy's HTTP status), or TLS through an ``https://`` proxy to a ``ws://``
    server. TLS to a ``wss://`` server through one may be either's: it says so."""
    if proxy is None:
        return reason
    parts = urlsplit(proxy)
    at_proxy = f"at the proxy {parts.hostname}:{parts.port or 'default port'}"
    if event in (Event.CONNECT_REFUSED, Event.CONNECT_DNS):
        return f"{reason} ({at_proxy})"
    if event in _TLS_EVENTS and parts.scheme.lower() == "https":
        if urlsplit(url).scheme.lower() == "wss":
            return f"{reason} (at the proxy {parts.hostname} or at the server: both are TLS)"
        return f"{reason} ({at_proxy})"
    return reason


def tls_mismatch_hint(url: str, event: Event, reason: str) -> str:
    """``reason``, plus a hint when a wss:// opening failed the way a plain server
    makes it fail: certainly (it answered the TLS hello with plain HTTP) or perhaps
    (it hung up during the handshake, as a TLS server refusing us may too)."""
    if not url.lower().startswith("wss://") or event not in (
        Event.CONNECT_TLS,
        Event.CONNECT_ERROR,
    ):
        return reason
    parts = urlsplit(url)
    host = parts.hostname or ""
    plain = f"ws://{f'[{host}]' if ':' in host else host}:{parts.port or 443}"
    if _PLAIN_ANSWER.search(reason):
        return f"{reason} (did the server answer without TLS? for a plain server use {plain})"
    if _HUNG_UP.search(reason):
        return f"{reason} (the server hung up during TLS: if it is a plain server, use {plain})"
    return reason
