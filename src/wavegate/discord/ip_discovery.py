"""UDP IP discovery packets (pure): how a voice client learns its external address.

The client sends a request to the address READY gave; the voice server answers with
the address and port it saw the request come from. Both packets are 74 bytes, all
big-endian: u16 type (1 request, 2 response), u16 length (70: what follows it), u32
ssrc, a 64-byte address (ASCII, null-padded), u16 port. Servers must accept longer
requests (some clients send 78 bytes); only the first 74 count.
"""

from __future__ import annotations

import struct

SIZE = 74
"""Bytes in a discovery request or response."""
REQUEST, RESPONSE = 0x1, 0x2
_HEADER = struct.Struct(">HHI")
_ADDRESS = 64


class DiscoveryError(ValueError):
    """A datagram that is not the discovery packet expected."""


def request(ssrc: int) -> bytes:
    """A discovery request for ``ssrc``."""
    return _HEADER.pack(REQUEST, SIZE - 4, ssrc) + bytes(_ADDRESS + 2)


def response(ssrc: int, address: str, port: int) -> bytes:
    """The server's answer: ``address``/``port`` as seen from the server."""
    encoded = address.encode("ascii")
    if len(encoded) >= _ADDRESS:
        raise ValueError(f"address too long for IP discovery: {len(encoded)} bytes")
    return (
        _HEADER.pack(RESPONSE, SIZE - 4, ssrc)
        + encoded.ljust(_ADDRESS, b"\0")
        + struct.pack(">H", port)
    )


def parse_request(data: bytes) -> int:
    """The ssrc of a discovery request (74 bytes or more).

    Raises:
        DiscoveryError: ``data`` is not a discovery request.
    """
    kind, length, ssrc = _unpack(data)
    if kind != REQUEST or length != SIZE - 4:
        raise DiscoveryError(f"not a discovery request (type {kind:#x}, length {length})")
    return ssrc


def parse_response(data: bytes, ssrc: int) -> tuple[str, int]:
    """The ``(address, port)`` a response to ``ssrc``'s request carries.

    Raises:
        DiscoveryError: ``data`` is not a response to that request.
    """
    kind, length, got = _unpack(data)
    if kind != RESPONSE or length != SIZE - 4:
        raise DiscoveryError(f"not a discovery response (type {kind:#x}, length {length})")
    if got != ssrc:
        raise DiscoveryError(f"a discovery response for ssrc {got}, not {ssrc}")
    raw = data[8 : 8 + _ADDRESS].split(b"\0", 1)[0]
    try:
        address = raw.decode("ascii")
    except UnicodeDecodeError:
        raise DiscoveryError("a discovery response whose address is not ASCII") from None
    if not address:
        raise DiscoveryError("a discovery response with no address")
    (port,) = struct.unpack_from(">H", data, 8 + _ADDRESS)
    return address, port


def _unpack(data: bytes) -> tuple[int, int, int]:
    if len(data) < SIZE:
        raise DiscoveryError(f"{len(data)} bytes: IP discovery packets have {SIZE}")
    kind, length, ssrc = _HEADER.unpack_from(data)
    return kind, length, ssrc
