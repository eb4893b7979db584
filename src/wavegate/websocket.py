"""The Websocket manager: one connection, every ending turned into one signal."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

from .codec import DEFAULT, JSONCodec
from .packets import (
    WebsocketPacket,
    WebsocketPacketBytes,
    WebsocketPacketJSON,
    WebsocketPacketText,
)
from .policy import DISCORD_VOICE, ClosePolicy
from .redact import redact_url
from .signals import (
    DisconnectSignal,
    EncodeError,
    Event,
    InvalidURLError,
    PayloadError,
    Signal,
)
from .transport import (
    BINARY,
    TEXT,
    ConnectFailed,
    Connector,
    Transport,
    TransportClosed,
    TransportOptions,
    get_connector,
)

log = logging.getLogger("wavegate.websocket")


class WebsocketState(IntEnum):
    """Where a :class:`Websocket` is in its life."""

    CONNECTED = 0
    CONNECTING = 1
    DISCONNECTED = 2
    DISCONNECTING = 3


_TRANSITIONS: Mapping[WebsocketState, frozenset[WebsocketState]] = {
    WebsocketState.DISCONNECTED: frozenset({WebsocketState.CONNECTING}),
    WebsocketState.CONNECTING: frozenset({WebsocketState.CONNECTED, WebsocketState.DISCONNECTED}),
    WebsocketState.CONNECTED: frozenset(
        {WebsocketState.DISCONNECTING, WebsocketState.DISCONNECTED}
    ),
    WebsocketState.DISCONNECTING: frozenset({WebsocketState.DISCONNECTED}),
}


_CONNECTED = WebsocketState.CONNECTED


@dataclass(frozen=True, slots=True)
class WebsocketStats:
    """Counters since the ``Websocket`` was created (data frames only)."""

    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int


def _check_url(url: str) -> None:
    if not isinstance(url, str):
        raise InvalidURLError(f"url must be a str, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise InvalidURLError(f"malformed URL {redact_url(url)!r}: {exc}") from exc
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURLError(f"URL scheme must be ws:// or wss://, got {redact_url(url)!r}")
    if not parts.hostname:
        raise InvalidURLError(f"URL has no host: {redact_url(url)!r}")


def _check_close(code: int, reason: str) -> None:
    if not isinstance(code, int) or not (code == 1000 or 3000 <= code <= 4999):
        raise ValueError(f"close code must be 1000 or in 3000..4999, got {code!r}")
    if len(reason.encode()) > 123:
        raise ValueError("close reason must be at most 123 bytes of UTF-8")


class Websocket:
    """A websocket connection that turns every way it can end into one signal.

    ``connect()``, ``receive()`` and ``send_*()`` raise :class:`DisconnectSignal`
    (stop), :class:`ReconnectSignal` (open a fresh session) or :class:`ResumeSignal`
    (re-open and continue the session), chosen by ``policy``. After a signal the state
    is ``DISCONNECTED`` and ``connect()`` may be called again.

    Args:
        policy: the close-code policy (default :data:`~wavegate.DISCORD_VOICE`).
        open_timeout: seconds for the whole opening handshake; ``None`` waits forever.
        close_timeout: seconds to wait for the peer to answer our close frame.
        ping_interval: seconds of silence before a keepalive ping; ``None`` disables it.
        ping_timeout: seconds to wait for anything back after that ping before the
            connection counts as dead (``KEEPALIVE_TIMEOUT``).
        max_size: largest message accepted, in bytes; a larger one closes the
            connection with 1009. ``None`` means no limit.
        json_codec: JSON functions for ``send_json`` and JSON receive mode (orjson
            when installed).
        receive_mode: ``"json"`` (text frames -> :class:`WebsocketPacketJSON`) or
            ``"text"`` (text frames -> :class:`WebsocketPacketText`).
        headers: extra HTTP headers for the opening handshake.
        ssl: ``True`` (verify, default), ``False`` (no verification) or an SSLContext.
        proxy: an ``http://`` proxy URL.
        compression: negotiate permessage-deflate.
        transport: the transport library (``"aiohttp"``).
    """

    def __init__(
        self,
        *,
        policy: ClosePolicy = DISCORD_VOICE,
        open_timeout: float | None = 10.0,
        close_timeout: float = 5.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        max_size: int | None = 1 << 20,
        json_codec: JSONCodec = DEFAULT,
        receive_mode: Literal["json", "text"] = "json",
        headers: Mapping[str, str] | None = None,
        ssl: ssl_module.SSLContext | bool = True,
        proxy: str | None = None,
        compression: bool = False,
        transport: str = "aiohttp",
    ) -> None:
        if not isinstance(policy, ClosePolicy):
            raise TypeError(f"policy must be a ClosePolicy, got {type(policy).__name__}")
        for name, value in (("open_timeout", open_timeout), ("ping_interval", ping_interval)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        for name, value in (("close_timeout", close_timeout), ("ping_timeout", ping_timeout)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if max_size is not None and max_size <= 0:
            raise ValueError(f"max_size must be positive or None, got {max_size!r}")
        if receive_mode not in ("json", "text"):
            raise ValueError(f"receive_mode must be 'json' or 'text', got {receive_mode!r}")
        self._policy = policy
        self._options = TransportOptions(
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_size=max_size,
            headers=dict(headers or {}),
            ssl=ssl,
            proxy=proxy,
            compression=compression,
        )
        self._connector: Connector = get_connector(transport)
        self._loads = json_codec.loads
        self._dumps = json_codec.dumps
        self._decode_json = receive_mode == "json"
        self._state = WebsocketState.DISCONNECTED
        self._transport: Transport | None = None
        self._url: str | None = None
        # How the current (or last) connection ended; set once per connection.
        self._end: Signal | None = None
        self._connect_done: asyncio.Future[None] | None = None
        self._opener: asyncio.Task[Transport] | None = None
        self._disconnect_done: asyncio.Future[None] | None = None
        self._receiving = False
        # A connection whose end a send noticed first: receive() still returns the
        # frames that arrived before it, then raises the same signal.
        self._draining: Transport | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0

    # -- state ---------------------------------------------------------------------

    @property
    def state(self) -> WebsocketState:
        """The current :class:`WebsocketState`."""
        return self._state

    @property
    def connected(self) -> bool:
        """``True`` iff the state is ``CONNECTED``."""
        return self._state is WebsocketState.CONNECTED

    @property
    def connecting(self) -> bool:
        """``True`` iff the state is ``CONNECTING``."""
        return self._state is WebsocketState.CONNECTING

    @property
    def disconnected(self) -> bool:
        """``True`` iff the state is ``DISCONNECTED``."""
        return self._state is WebsocketState.DISCONNECTED

    @property
    def disconnecting(self) -> bool:
        """``True`` iff the state is ``DISCONNECTING``."""
        return self._state is WebsocketState.DISCONNECTING

    @property
    def policy(self) -> ClosePolicy:
        """The close-code policy in force."""
        return self._policy

    @property
    def last_signal(self) -> Signal | None:
        """The signal that ended the last connection, if it has ended."""
        return self._end

    @property
    def close_code(self) -> int | None:
        """The close code of the last connection end (``None`` if none yet)."""
        return None if self._end is None else self._end.code

    @property
    def close_reason(self) -> str | None:
        """The close reason of the last connection end (``None`` if none yet)."""
        return None if self._end is None else self._end.reason

    @property
    def stats(self) -> WebsocketStats:
        """Frame and byte counters (data frames, both directions)."""
        return WebsocketStats(self.frames_in, self.frames_out, self.bytes_in, self.bytes_out)

    def _set_state(self, new: WebsocketState) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise AssertionError(f"illegal state change {self._state.name} -> {new.name}")
        self._state = new

    def __repr__(self) -> str:
        url = "-" if self._url is None else redact_url(self._url)
        return f"<Websocket {self._state.name} {url} policy={self._policy.name!r}>"

    async def __aenter__(self) -> Websocket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.disconnect()

    # -- opening and closing -------------------------------------------------------

    async def connect(self, url: str) -> None:
        """Open the connection.

        Raises:
            InvalidURLError: ``url`` is not a ``ws://``/``wss://`` URL (at once).
            RuntimeError: already connected.
            ReconnectSignal: the open failed in a way worth retrying (timeout,
                refused, DNS, 5xx/408/429...), per the policy.
            DisconnectSignal: the open failed for good (4xx, bad certificate), or
                ``disconnect()`` was called meanwhile.
        """
        _check_url(url)
        if self._state is WebsocketState.CONNECTING:
            await self._wait_connect()
            return
        if self._state is WebsocketState.DISCONNECTING and self._disconnect_done is not None:
            await asyncio.shield(self._disconnect_done)
        if self._state is WebsocketState.CONNECTED:
            raise RuntimeError("already connected; call disconnect() before connect()")
        self._set_state(WebsocketState.CONNECTING)
        self._end = None
        self._draining = None
        self._url = url
        loop = asyncio.get_running_loop()
        self._connect_done = loop.create_future()
        opener = self._opener = loop.create_task(self._connector(url, self._options))
        try:
            transport = await opener
        except ConnectFailed as failed:
            signal = self._policy.signal_for(failed.event, code=failed.code, reason=failed.reason)
            signal.__cause__ = failed.__cause__
            self._finish_connect(signal)
            log.info("connect to %s failed: %s", redact_url(url), signal)
            raise signal from failed.__cause__
        except asyncio.CancelledError:
            if opener.cancelled() and self._end is not None:
                # disconnect() cancelled the opening; the caller was not cancelled.
                self._finish_connect(self._end)
                raise self._end.again() from None
            await self._cancel_opener(opener)
            self._finish_connect(
                DisconnectSignal(
                    "connect() was cancelled", event=Event.LOCAL_CLOSE, initiated_locally=True
                )
            )
            raise
        except Exception as exc:
            self._finish_connect(
                DisconnectSignal(f"connect() failed: {exc}", event=Event.CONNECT_ERROR)
            )
            raise
        self._transport = transport
        self._set_state(WebsocketState.CONNECTED)
        self._opener = None
        self._connect_done.set_result(None)
        log.debug("connected to %s", redact_url(url))

    async def _cancel_opener(self, opener: asyncio.Task[Transport]) -> None:
        opener.cancel()
        await asyncio.wait({opener})
        if not opener.cancelled() and opener.exception() is None:
            # It finished opening just as we were cancelled: close what it opened.
            await opener.result().abort()

    def _finish_connect(self, signal: Signal) -> None:
        self._end = signal
        self._opener = None
        self._set_state(WebsocketState.DISCONNECTED)
        if self._connect_done is not None and not self._connect_done.done():
            self._connect_done.set_result(None)

    async def _wait_connect(self) -> Transport:
        """Wait for the in-flight connect; the transport, or the signal it ended with."""
        assert self._connect_done is not None
        await asyncio.shield(self._connect_done)
        if self._transport is not None and self._state is WebsocketState.CONNECTED:
            return self._transport
        raise self._ended_signal()

    async def disconnect(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection; idempotent, bounded by ``close_timeout``.

        A ``receive()`` blocked in another task wakes with :class:`DisconnectSignal`.
        Close with a code in 3000..4999 (for instance 4000) to keep a Discord session
        resumable: Discord invalidates sessions closed with 1000 or 1001.

        Raises:
            ValueError: ``code`` is not 1000 or in 3000..4999, or ``reason`` is longer
                than 123 bytes.
        """
        _check_close(code, reason)
        state = self._state
        if state is WebsocketState.DISCONNECTED:
            return
        local = DisconnectSignal(reason, code=code, event=Event.LOCAL_CLOSE, initiated_locally=True)
        if state is WebsocketState.CONNECTING:
            self._end = local
            if self._opener is not None:
                self._opener.cancel()
            assert self._connect_done is not None
            await asyncio.shield(self._connect_done)
            return
        if state is WebsocketState.DISCONNECTING:
            assert self._disconnect_done is not None
            await asyncio.shield(self._disconnect_done)
            return
        transport = self._transport
        assert transport is not None
        self._end = local
        self._disconnect_done = asyncio.get_running_loop().create_future()
        self._set_state(WebsocketState.DISCONNECTING)
        try:
            await transport.close(code, reason)
        finally:
            self._transport = None
            self._set_state(WebsocketState.DISCONNECTED)
            self._disconnect_done.set_result(None)
            log.debug("disconnected (code %s)", code)

    async def _connection_ended(self, ended: TransportClosed, *, by_send: bool = False) -> Signal:
        """Record how the connection ended (once) and return the signal to raise.

        When a send noticed the end, the transport stays readable (``_draining``) so
        that frames which arrived before it are still delivered.
        """
        if self._end is not None:
            # Someone else already decided (a local disconnect, or another task).
            return self._end.again()
        signal = self._policy.signal_for(
            ended.event, code=ended.code, reason=ended.reason, initiated_locally=ended.local
        )
        signal.__cause__ = ended.__cause__
        self._end = signal
        transport = self._transport
        self._transport = None
        if by_send and not self._receiving:
            self._draining = transport
        if self._state is WebsocketState.CONNECTED:
            self._set_state(WebsocketState.DISCONNECTED)
        log.info("connection ended: %s -> %s", signal, type(signal).__name__)
        if transport is not None:
            await transport.abort()
        return signal

    def _ended_signal(self) -> Signal:
        if self._end is not None:
            return self._end.again()
        return DisconnectSignal("not connected; call connect() first", event=Event.NOT_CONNECTED)

    async def _current_transport(self) -> Transport:
        if self._state is WebsocketState.CONNECTING:
            return await self._wait_connect()
        raise self._ended_signal()

    # -- receiving -----------------------------------------------------------------

    async def receive(self) -> WebsocketPacket:
        """Wait for the next packet.

        Every frame that arrived before the connection ended is returned before the
        signal. Cancelling a waiting ``receive()`` loses nothing.

        Returns:
            :class:`WebsocketPacketJSON` for a text frame (``receive_mode="json"``),
            :class:`WebsocketPacketText` (``receive_mode="text"``), or
            :class:`WebsocketPacketBytes` for a binary frame.

        Raises:
            DisconnectSignal, ReconnectSignal, ResumeSignal: the connection ended.
            PayloadError: a text frame was not a JSON object; it carries the raw text
                and the connection stays usable.
            RuntimeError: another task is already in ``receive()``.
        """
        if self._receiving:
            raise RuntimeError(
                "receive() is already waiting in another task; only one reader is allowed"
            )
        transport = self._transport
        if transport is None or self._state is not _CONNECTED:
            return await self._receive_slow()
        self._receiving = True
        try:
            # The hot path: the transport's recv may be the library's own coroutine.
            data = await transport.recv()
        except Exception as exc:
            raise await self._receive_failed(transport, exc) from exc.__cause__
        finally:
            self._receiving = False
        # _packet() inlined for text and binary: a method call is a measurable share here.
        self.frames_in += 1
        self.bytes_in += len(data)
        if type(data) is bytes:
            return WebsocketPacketBytes(data)
        if self._decode_json:
            try:
                value = self._loads(data)
            except ValueError:
                raise PayloadError("text frame is not valid JSON", data) from None  # type: ignore[arg-type]
            if type(value) is dict:
                return WebsocketPacketJSON(value)
            raise PayloadError("JSON text frame is not an object", data)  # type: ignore[arg-type]
        return WebsocketPacketText(data)  # type: ignore[arg-type]

    async def _receive_slow(self) -> WebsocketPacket:
        """``receive()`` while connecting, or draining a connection a send saw end."""
        self._receiving = True
        try:
            transport = self._draining or await self._current_transport()
            try:
                data = await transport.recv()
            except Exception as exc:
                raise await self._receive_failed(transport, exc) from exc.__cause__
        finally:
            self._receiving = False
        return self._packet(data)

    async def _receive_failed(self, transport: Transport, exc: Exception) -> Signal:
        ended = transport.ended(exc)
        if transport is self._draining:
            self._draining = None
            return self._ended_signal()
        return await self._connection_ended(ended)

    def _packet(self, data: str | bytes) -> WebsocketPacket:
        self.frames_in += 1
        self.bytes_in += len(data)
        if type(data) is bytes:
            return WebsocketPacketBytes(data)
        if not self._decode_json:
            return WebsocketPacketText(data)  # type: ignore[arg-type]
        try:
            value = self._loads(data)
        except ValueError:
            raise PayloadError("text frame is not valid JSON", data) from None  # type: ignore[arg-type]
        if type(value) is not dict:
            raise PayloadError("JSON text frame is not an object", data)  # type: ignore[arg-type]
        return WebsocketPacketJSON(value)

    # -- sending -------------------------------------------------------------------

    async def _send(self, kind: int, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._state is not WebsocketState.CONNECTED:
            transport = await self._current_transport()
        try:
            await transport.send(kind, data)
        except TransportClosed as ended:
            raise await self._connection_ended(ended, by_send=True) from ended.__cause__
        self.frames_out += 1
        self.bytes_out += len(data)

    async def send_json(self, data: dict[str, Any]) -> None:
        """Send ``data`` as a JSON text frame.

        Raises:
            TypeError: ``data`` is not a dict.
            EncodeError: the codec cannot encode it (nothing was sent).
            DisconnectSignal, ReconnectSignal, ResumeSignal: not connected, or the
                connection ended (the message was not sent).
        """
        if not isinstance(data, dict):
            raise TypeError(f"send_json() takes a dict, got {type(data).__name__}")
        try:
            encoded = self._dumps(data)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"cannot encode as JSON: {exc}") from exc
        if isinstance(encoded, str):
            encoded = encoded.encode()
        await self._send(TEXT, encoded)

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame.

        Raises:
            TypeError: ``data`` is not bytes, bytearray or memoryview.
            DisconnectSignal, ReconnectSignal, ResumeSignal: as for ``send_json``.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_bytes() takes bytes, got {type(data).__name__}")
        await self._send(BINARY, bytes(data) if isinstance(data, memoryview) else data)

    async def send_text(self, data: str) -> None:
        """Send a text frame as-is (no JSON encoding).

        Raises:
            TypeError: ``data`` is not a str.
            EncodeError: it holds lone surrogates, which UTF-8 cannot encode.
            DisconnectSignal, ReconnectSignal, ResumeSignal: as for ``send_json``.
        """
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes a str, got {type(data).__name__}")
        try:
            encoded = data.encode()
        except UnicodeEncodeError as exc:
            raise EncodeError(f"text is not encodable as UTF-8: {exc}") from exc
        await self._send(TEXT, encoded)
