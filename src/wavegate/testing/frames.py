"""A small server-side RFC 6455 codec for the test servers (pure, no I/O).

The fake servers write their own frames so they can also write broken ones.
"""

from __future__ import annotations

import base64
import hashlib
import struct

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """An unmasked (server-to-client) frame; any opcode, flags or length."""
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode & 0xF
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def close_payload(code: int | None, reason: str = "") -> bytes:
    """The payload of a close frame (empty when ``code`` is ``None``)."""
    if code is None:
        return b""
    return struct.pack("!H", code) + reason.encode()


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """``(code, reason)`` of a close frame's payload."""
    if len(payload) < 2:
        return None, ""
    (code,) = struct.unpack("!H", payload[:2])
    return code, payload[2:].decode(errors="replace")


def unmask(payload: bytes, mask: bytes) -> bytes:
    """Apply a 4-byte websocket mask."""
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )
