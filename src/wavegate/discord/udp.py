"""The voice connection's UDP socket: IP discovery first, then media (RTP) both ways.

:class:`UdpDiscovery` is the voice client's default ``discover``: for each READY it
opens a :class:`VoiceUdp` to the address READY gave, learns this client's external
address (retrying lost packets), and keeps the socket for the media layer.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from .._flag import Flag
from . import ip_discovery
from .payloads import Ready

log = logging.getLogger("wavegate.discord.udp")


class DiscoveryFailed(ConnectionError):
    """UDP IP discovery got no usable answer (the message says what happened)."""


class _Datagrams(asyncio.DatagramProtocol):
    """Received datagrams, and what a discovery is waiting for."""

    def __init__(self, queue_size: int) -> None:
        self.queue: collections.deque[bytes] = collections.deque(maxlen=queue_size)
        self.arrived = Flag()
        self.dropped = 0
        self.error: OSError | None = None
        self.lost = Flag()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1  # real-time media: the oldest packet is the one to lose
        self.queue.append(data)
        self.arrived.set()

    def error_received(self, exc: Exception) -> None:
        # Connected UDP sockets report ICMP errors (port unreachable) here.
        self.error = exc if isinstance(exc, OSError) else OSError(str(exc))
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self.arrived.set()


class VoiceUdp:
    """A UDP socket connected to a voice server's media address.

    Attributes:
        remote: the voice server's ``(address, port)``.
        external: this client's ``(address, port)`` as the server sees it, once
            :meth:`discover` succeeded.
        dropped: received datagrams dropped because :meth:`receive` fell behind
            (the oldest go first).
    """

    def __init__(self, transport: asyncio.DatagramTransport, datagrams: _Datagrams) -> None:
        self._transport = transport
        self._datagrams = datagrams
        self.remote: tuple[str, int] = transport.get_extra_info("peername")[:2]
        self.external: tuple[str, int] | None = None

    @classmethod
    async def open(cls, host: str, port: int, *, queue_size: int = 256) -> VoiceUdp:
        """A socket connected to ``host:port``; keeps the latest ``queue_size`` datagrams."""
        loop = asyncio.get_running_loop()
        transport, datagrams = await loop.create_datagram_endpoint(
            lambda: _Datagrams(queue_size), remote_addr=(host, port)
        )
        return cls(transport, datagrams)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"to {self.remote[0]}:{self.remote[1]}"
        return f"<VoiceUdp {state}>"

    @property
    def local(self) -> tuple[str, int]:
        """This socket's own ``(address, port)``."""
        address: tuple[str, int] = self._transport.get_extra_info("sockname")[:2]
        return address

    @property
    def closed(self) -> bool:
        return self._transport.is_closing()

    @property
    def dropped(self) -> int:
        return self._datagrams.dropped

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        datagrams = self._datagrams
        while True:
            if datagrams.error is not None:
                error, datagrams.error = datagrams.error, None
                raise DiscoveryFailed(
                    f"UDP IP discovery to {self.remote[0]}:{self.remote[1]}: {error}"
                ) from error
            for packet in list(datagrams.queue):
                try:
                    found = ip_discovery.parse_response(packet, ssrc)
                except ip_discovery.DiscoveryError:
                    continue
                datagrams.queue.remove(packet)
                return found
            if datagrams.lost.is_set():
                raise DiscoveryFailed("the UDP socket closed during IP discovery")
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            datagrams.arrived.clear()
            try:
                await asyncio.wait_for(datagrams.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return None

    def send(self, packet: bytes) -> None:
        """Send one datagram (an RTP packet, once transport-encrypted)."""
        if self.closed:
            raise ConnectionError("the voice UDP socket is closed")
        self._transport.sendto(packet)

    async def receive(self) -> bytes:
        """The next datagram from the voice server.

        Raises:
            ConnectionError: the socket is closed (and nothing is left to read).
        """
        datagrams = self._datagrams
        while not datagrams.queue:
            if datagrams.lost.is_set() or self.closed:
                raise ConnectionError("the voice UDP socket is closed")
            datagrams.arrived.clear()
            await datagrams.arrived.wait()
        return datagrams.queue.popleft()

    def close(self) -> None:
        """Close the socket (idempotent); a waiting :meth:`receive` ends."""
        self._transport.close()
        self._datagrams.arrived.set()


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
