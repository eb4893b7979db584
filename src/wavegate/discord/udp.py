"""The voice connection's UDP socket: IP discovery first, then media (RTP) both ways.

:class:`UdpDiscovery` is the voice client's default ``discover``: for each READY it
opens a :class:`VoiceUdp` to the address READY gave, learns this client's external
address (retrying lost packets), and keeps the socket for the media layer.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import socket

from .._flag import Flag
from . import ip_discovery
from .payloads import Ready

log = logging.getLogger("wavegate.discord.udp")


class DiscoveryFailed(ConnectionError):
    """UDP IP discovery got no usable answer (the message says what happened)."""


_MAX_DATAGRAM = 65536
"""Read whole: a datagram longer than the buffer would be cut short without a word."""


class VoiceUdp(asyncio.DatagramProtocol):
    """A UDP socket connected to a voice server's media address (make one with
    :meth:`open` or :meth:`wrap`).

    The loop reads it with a reader callback, one datagram per wakeup. There is no
    asyncio transport, and the receive queue is made when media first arrives: 2 KiB
    less per session (workload G) than an asyncio datagram endpoint. On a loop that
    cannot watch sockets (Windows' proactor loop, the default there) it runs on an
    asyncio datagram transport instead, which queues what it cannot send yet.

    Attributes:
        remote: the voice server's ``(address, port)``.
        local: this socket's own ``(address, port)``.
        external: this client's ``(address, port)`` as the server sees it, once
            :meth:`discover` succeeded.
        dropped: received datagrams dropped because :meth:`receive` fell behind
            (the oldest go first). Datagrams the kernel's socket buffer had no room
            for (a long loop stall: a burst while nothing read) are lost before this
            count can see them.
        unsent: datagrams :meth:`send` could not hand to the system: no room in the
            socket's or the interface's buffer (real-time media: a packet sent late is
            lost anyway), or an error (an earlier datagram's ICMP error, which
            :meth:`discover` reports).
    """

    def __init__(self, sock: socket.socket, *, queue_size: int = 256) -> None:
        if isinstance(queue_size, bool) or not isinstance(queue_size, int):
            raise TypeError(f"queue_size must be an int, got {queue_size!r}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._queue: collections.deque[bytes] | None = None
        self._queue_size = queue_size
        self._arrived = Flag()
        self._error: OSError | None = None
        self._closed = False
        self.dropped = 0
        self.unsent = 0
        self.remote: tuple[str, int] = _address(sock.getpeername())
        self.local: tuple[str, int] = _address(sock.getsockname())
        self.external: tuple[str, int] | None = None

    @classmethod
    async def wrap(cls, sock: socket.socket, *, queue_size: int = 256) -> VoiceUdp:
        """Take over ``sock``, a connected datagram socket (made non-blocking); keep
        the latest ``queue_size`` datagrams received.

        Raises:
            ValueError: ``queue_size`` is below 1.
            TypeError: ``queue_size`` is not an int.
        """
        udp = cls(sock, queue_size=queue_size)
        try:
            udp._loop.add_reader(udp._fd, udp._readable)
        except NotImplementedError:  # Windows' proactor loop
            udp._transport, _ = await udp._loop.create_datagram_endpoint(lambda: udp, sock=sock)
        return udp

    @classmethod
    async def open(cls, host: str, port: int, *, queue_size: int = 256) -> VoiceUdp:
        """A socket connected to ``host:port``; keeps the latest ``queue_size`` datagrams.

        Raises:
            OSError: ``host`` does not resolve (``socket.gaierror``, naming it), or no
                address of it can be reached.
            ValueError: ``port`` is not in 1..65535, or ``queue_size`` is below 1.
            TypeError: ``queue_size`` is not an int.
        """
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an int in 1..65535, got {port!r}")
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise socket.gaierror(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from exc
        failure: OSError = OSError(f"no address for {host}:{port}")
        for family, kind, proto, _, address in found:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.connect(address)  # UDP: nothing is sent; the peer is fixed
                return await cls.wrap(sock, queue_size=queue_size)
            except OSError as exc:
                sock.close()
                failure = exc
            except BaseException:
                sock.close()
                raise
        raise failure

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"to {self.remote[0]}:{self.remote[1]}"
        return f"<VoiceUdp {state}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def _readable(self) -> None:
        try:
            data = self._sock.recv(_MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.error_received(exc)
        else:
            self.datagram_received(data, None)

    def datagram_received(self, data: bytes, addr: object) -> None:
        queue = self._queue
        if queue is None:
            queue = self._queue = collections.deque(maxlen=self._queue_size)
        elif len(queue) == self._queue_size:
            self.dropped += 1  # real-time media: the oldest packet is the one to lose
        queue.append(data)
        self._arrived.set()

    def error_received(self, exc: Exception) -> None:
        # A connected UDP socket reports ICMP errors (port unreachable) here.
        self._error = exc if isinstance(exc, OSError) else OSError(str(exc))
        self._arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True  # the datagram transport's socket is closed
        self._arrived.set()

    async def discover(
        self, ssrc: int, *, timeout: float = 1.0, attempts: int = 3
    ) -> tuple[str, int]:
        """This client's external ``(address, port)``: a request, then the server's
        answer; a lost packet is sent again up to ``attempts`` times, ``timeout``
        seconds apart. Datagrams that are not the answer are left for :meth:`receive`.

        Raises:
            DiscoveryFailed: no answer, the port is unreachable, or the socket closed.
        """
        where = f"{self.remote[0]}:{self.remote[1]}"
        for _ in range(attempts):
            self.send(ip_discovery.request(ssrc))
            found = await self._answer(ssrc, timeout)
            if found is not None:
                self.external = found
                return found
        raise DiscoveryFailed(
            f"no answer to UDP IP discovery from {where} ({attempts} requests, {timeout:g} s apart)"
        )

    async def _answer(self, ssrc: int, timeout: float) -> tuple[str, int] | None:
        deadline = self._loop.time() + timeout
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                raise DiscoveryFailed(
                    f"UDP IP discovery to {self.remote[0]}:{self.remote[1]}: {error}"
                ) from error
            if (found := self._take_answer(ssrc)) is not None:
                return found
            if self._closed:
                raise DiscoveryFailed("the UDP socket closed during IP discovery")
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return None
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return None

    def _take_answer(self, ssrc: int) -> tuple[str, int] | None:
        """The discovery answer among the queued datagrams, taken out of the queue."""
        queue = self._queue
        for packet in queue or ():
            try:
                found = ip_discovery.parse_response(packet, ssrc)
            except ip_discovery.DiscoveryError:
                continue
            assert queue is not None
            queue.remove(packet)
            if not queue:
                self._queue = None  # a session that gets no media keeps no queue block
            return found
        return None

    def send(self, packet: bytes) -> None:
        """Send one datagram (an RTP packet, once transport-encrypted). One the system
        refuses (no room, or an earlier datagram's ICMP error) is counted in
        :attr:`unsent`, not queued.

        Raises:
            ConnectionError: the socket is closed.
            OSError: ``packet`` is larger than a datagram can be (``EMSGSIZE``).
        """
        if self._closed:
            raise ConnectionError("the voice UDP socket is closed")
        if self._transport is not None:
            self._transport.sendto(packet)
            return
        try:
            self._sock.send(packet)
        except (BlockingIOError, InterruptedError):
            self.unsent += 1
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise  # the caller's mistake, not the network's
            self.unsent += 1
            if exc.errno != errno.ENOBUFS:  # ENOBUFS: no room in the interface's queue
                self._error = exc  # ICMP from an earlier datagram; discovery reports it

    async def receive(self) -> bytes:
        """The next datagram from the voice server.

        Raises:
            ConnectionError: the socket is closed (and nothing is left to read).
        """
        while not self._queue:
            if self._closed:
                raise ConnectionError("the voice UDP socket is closed")
            self._arrived.clear()
            await self._arrived.wait()
        return self._queue.popleft()

    def close(self) -> None:
        """Close the socket (idempotent); a waiting :meth:`receive` ends."""
        if self._closed:
            return
        self._closed = True
        if self._transport is not None:
            self._transport.close()
        else:
            self._loop.remove_reader(self._fd)
            self._sock.close()
        self._arrived.set()


def _address(address: object) -> tuple[str, int]:
    """``(host, port)`` of a socket address (IPv6 ones carry two fields more)."""
    if isinstance(address, tuple):
        return (str(address[0]), int(address[1]))
    return (str(address), 0)  # a Unix socket (tests): a path, no port


class UdpDiscovery:
    """The voice client's default ``discover``: real UDP IP discovery, keeping the
    socket (:attr:`udp`) for the media layer until the next READY or :meth:`close`.

    Args:
        timeout: seconds to wait for each answer.
        attempts: requests sent before giving up (UDP loses packets).
    """

    def __init__(self, *, timeout: float = 1.0, attempts: int = 3) -> None:
        if timeout <= 0 or attempts < 1:
            raise ValueError("UdpDiscovery needs timeout > 0 and attempts >= 1")
        self.timeout = timeout
        self.attempts = attempts
        self.udp: VoiceUdp | None = None

    async def __call__(self, ready: Ready) -> tuple[str, int]:
        self.close()
        udp = await VoiceUdp.open(ready.ip, ready.port)
        try:
            found = await udp.discover(ready.ssrc, timeout=self.timeout, attempts=self.attempts)
        except BaseException:
            udp.close()
            raise
        self.udp = udp
        log.debug("UDP IP discovery: %s:%s", *found)
        return found

    def close(self) -> None:
        """Close the socket of the last discovery, if any."""
        if self.udp is not None:
            self.udp.close()
            self.udp = None
