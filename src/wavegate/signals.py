"""Every exception wavegate raises.

Two families:

- :class:`Signal` and its three kinds say what the caller should do next after a
  connection ended (or could not start): stop, open a fresh session, or resume.
- :class:`WavegateError` covers everything else: bad input, bad payloads, misuse.

Transport-library exceptions never reach users; they arrive as ``__cause__``.
"""

from __future__ import annotations

import sys
from enum import Enum


class Event(str, Enum):
    """What ended a connection (or kept it from opening).

    Carried by every :class:`Signal` as ``event`` so callers can log and adapt
    without parsing messages.
    """

    PEER_CLOSE = "peer_close"
    """The peer sent a close frame (its code is the signal's ``code``)."""
    LOCAL_CLOSE = "local_close"
    """We closed the connection (``disconnect()``)."""
    NO_CLOSE_FRAME = "no_close_frame"
    """The TCP connection ended without a close frame."""
    TRANSPORT_ERROR = "transport_error"
    """An ``OSError`` (reset, broken pipe...) mid-session."""
    KEEPALIVE_TIMEOUT = "keepalive_timeout"
    """No pong (or heartbeat ACK) arrived in time: the connection is half-open."""
    PROTOCOL_ERROR = "protocol_error"
    """The peer broke RFC 6455 (oversized frame, invalid UTF-8...); we closed with ``code``."""
    CONNECT_TIMEOUT = "connect_timeout"
    CONNECT_REFUSED = "connect_refused"
    CONNECT_DNS = "connect_dns"
    CONNECT_TLS = "connect_tls"
    """The TLS handshake failed for a reason other than certificate verification."""
    CONNECT_TLS_CERTIFICATE = "connect_tls_certificate"
    """The server's certificate did not verify: retrying cannot help."""
    CONNECT_ERROR = "connect_error"
    """Any other failure to open the TCP connection."""
    HANDSHAKE_STATUS = "handshake_status"
    """The server answered the upgrade with an HTTP status (in ``code``)."""
    HANDSHAKE_INVALID = "handshake_invalid"
    """The server accepted the upgrade but broke RFC 6455 4.1 doing so (a subprotocol
    or extension the client never offered, a wrong accept key): retrying cannot help."""
    NOT_CONNECTED = "not_connected"
    """A send or receive was issued with no connection and none ever signalled."""


class Signal(Exception):
    """Base of the three instructions: what the caller should do next.

    Attributes:
        code: the websocket close code (or HTTP status for ``HANDSHAKE_STATUS``),
            ``None`` when there was none.
        reason: the close reason or a short description of the failure.
        event: what happened, as an :class:`Event`.
        initiated_locally: ``True`` when this side started the close.
        retry_after: seconds the server asked to wait before trying again (an HTTP
            ``Retry-After`` with a ``HANDSHAKE_STATUS``), ``None`` when it asked none.
    """

    def __init__(
        self,
        reason: str = "",
        *,
        code: int | None = None,
        event: Event = Event.NOT_CONNECTED,
        initiated_locally: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.event = event
        self.initiated_locally = initiated_locally
        self.retry_after = retry_after
        # The cause says why; the exception being handled when it was raised does not.
        self.__suppress_context__ = True

    def __str__(self) -> str:
        where = "local" if self.initiated_locally else "peer"
        code = "-" if self.code is None else str(self.code)
        text = f"{self.event.value} (code {code}, {where})"
        return f"{text}: {self.reason}" if self.reason else text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r}, "
            f"event={self.event.value!r}, initiated_locally={self.initiated_locally!r})"
        )

    def copy(self) -> Signal:
        """A fresh signal of the same kind and content, chained to the same cause (to
        raise again without piling tracebacks on one object)."""
        copy = type(self)(
            self.reason,
            code=self.code,
            event=self.event,
            initiated_locally=self.initiated_locally,
            retry_after=self.retry_after,
        )
        copy.__cause__ = self.__cause__
        return copy


class DisconnectSignal(Signal):
    """Stop for good: the session is over and retrying will not help."""


class ReconnectSignal(Signal):
    """Open a fresh session (new socket, new IDENTIFY), usually after a backoff."""


class ResumeSignal(Signal):
    """Re-open the socket at once and continue the same session (RESUME)."""


class WavegateError(Exception):
    """Base of every wavegate error that is not a :class:`Signal`."""


class RedactedError(WavegateError):
    """Stands in, in a signal's cause chain, for a transport library's exception whose
    text held a secret (a URL token or password, a header value).

    Its message is the original exception's type and text with each secret replaced
    by ``<redacted>``; its own ``__cause__`` and ``__context__`` are scrubbed the same way.
    """


class InvalidURLError(WavegateError, ValueError):
    """The URL passed to ``connect()`` is not a usable ``ws://`` or ``wss://`` URL."""


class PayloadError(WavegateError, RuntimeError):
    """A received text frame could not be turned into a packet.

    Raised by ``receive()`` for a text frame that is not valid JSON, or whose JSON is
    not an object. The frame is consumed, the connection stays usable, and ``raw``
    holds the frame's text so nothing is silently lost. It is a ``RuntimeError`` for
    compatibility with the reference API, which raises one for unexpected payloads.

    Attributes:
        raw: the frame's text exactly as received.
        detail: why it was rejected.
    """

    def __init__(self, detail: str, raw: str) -> None:
        shown = raw if len(raw) <= 80 else raw[:77] + "..."
        super().__init__(f"{detail}: {shown!r}")
        self.detail = detail
        self.raw = raw


class EncodeError(WavegateError, TypeError):
    """``send_json`` got a value the JSON codec cannot encode (nothing was sent)."""


class SendQueueFullError(WavegateError):
    """A session's outgoing queue is full: the message was not accepted."""


if sys.version_info >= (3, 11):
    _Timeout = TimeoutError  # asyncio.TimeoutError is TimeoutError
else:  # pragma: no cover - Python 3.10, where asyncio.TimeoutError is a class of its own
    import asyncio

    class _Timeout(TimeoutError, asyncio.TimeoutError):
        pass


class SendTimeoutError(WavegateError, _Timeout):
    """A queued message could not be sent before its deadline: it was not written, and
    never will be. A ``TimeoutError`` (also an ``asyncio.TimeoutError`` on 3.10)."""


class WaitTimeoutError(WavegateError, _Timeout):
    """A wait (``wait_ready``, ``wait_dave_ready``) ran out of time; the message says
    where things stand. A ``TimeoutError`` (also an ``asyncio.TimeoutError`` on 3.10)."""


class SessionClosedError(WavegateError):
    """The session stopped before this message could be sent (it was not sent).

    Attributes:
        outcome: why the session stopped.
    """

    def __init__(self, message: str, outcome: object = None) -> None:
        super().__init__(message)
        self.outcome = outcome
