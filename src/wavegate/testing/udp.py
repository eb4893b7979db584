"""The fake voice gateway's UDP side: answers IP discovery, counts RTP per ssrc.

READY advertises this endpoint's address. A discovery request (74 bytes or more) is
answered with the address and port it came from, as Discord's voice servers do; an
RTP packet (version 2) is counted under its ssrc; anything else is counted as junk.
"""

from __future__ import annotations

import asyncio
import collections
import struct
from typing import cast

# Written from the protocol's description, not shared with the client's
# wavegate.discord.ip_discovery: a client bug in the format must show here.
_DISCOVERY = struct.Struct(">HHI64sH")


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, owner: FakeVoiceUdp) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.owner.handle(data, addr)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class FakeVoiceUdp:
    """A UDP endpoint for voice media on ``host`` (an ephemeral port).

    Attributes:
        discoveries: IP discovery requests answered.
        rtp_packets: RTP packets received, per ssrc.
        junk: datagrams that were neither.
        answer_discovery: when false, requests are counted but not answered (a
            voice server whose UDP is unreachable).
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.discoveries = 0
        self.rtp_packets: collections.Counter[int] = collections.Counter()
        self.junk = 0
        self.answer_discovery = True
        self._endpoint: _Endpoint | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self), local_addr=(self.host, 0)
        )
        self._endpoint = endpoint

    def close(self) -> None:
        if self._endpoint is not None and self._endpoint.transport is not None:
            self._endpoint.transport.close()
        self._endpoint = None

    @property
    def address(self) -> tuple[str, int]:
        """The ``(address, port)`` READY advertises."""
        if self._endpoint is None or self._endpoint.transport is None:
            raise RuntimeError("the fake voice UDP endpoint is not running")
        address: tuple[str, int] = self._endpoint.transport.get_extra_info("sockname")[:2]
        return address

    def handle(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        """What to answer ``data`` from ``source`` with (``None``: nothing)."""
        if len(data) >= _DISCOVERY.size and data[:2] == b"\x00\x01":
            _, length, ssrc, _, _ = _DISCOVERY.unpack_from(data)
            if length != 70:
                self.junk += 1
                return None
            self.discoveries += 1
            if not self.answer_discovery:
                return None
            return _DISCOVERY.pack(2, 70, ssrc, source[0].encode("ascii"), source[1])
        if len(data) >= 12 and data[0] >> 6 == 2:
            (ssrc,) = struct.unpack_from(">I", data, 8)
            self.rtp_packets[ssrc] += 1
            return None
        self.junk += 1
        return None
