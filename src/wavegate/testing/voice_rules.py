"""What the real voice gateway refuses, as pure checks the fake gateway applies.

Each check returns ``None`` for a valid message, or the ``(close code, reason)`` Discord
answers it with. The fake gateway's ``strict=False`` turns them off (a lax server, for
clients that are not yet right); each one is table-tested.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

Refusal = tuple[int, str]

MAX_NONCE = 1 << 53
"""Heartbeat nonces must be below this (JSON numbers Discord reads exactly)."""
LEGACY_MODES = frozenset(
    {"xsalsa20_poly1305", "xsalsa20_poly1305_suffix", "xsalsa20_poly1305_lite",
     "xsalsa20_poly1305_lite_rtpsize", "aead_aes256_gcm"}
)  # fmt: skip
"""Encryption modes Discord stopped accepting (2024-11-18)."""


def check_path(path: str) -> tuple[int, str] | None:
    """The HTTP status (and why) refusing an opening handshake whose URL lacks ``v=8``."""
    versions = parse_qs(urlsplit(path).query).get("v", [])
    if versions == ["8"]:
        return None
    return 400, "the voice gateway v8 needs ?v=8 in its URL"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_heartbeat(payload: Any) -> Refusal | None:
    """op 3 (v8): ``{"t": nonce, "seq_ack": seq}``; the nonce an integer below 2**53."""
    if not isinstance(payload, dict) or "t" not in payload:
        return 4020, "heartbeat without a nonce (t)"
    nonce = payload["t"]
    if not _is_int(nonce):
        return 4020, "heartbeat nonce is not an integer"
    if not 0 <= nonce < MAX_NONCE:
        return 4020, "heartbeat nonce out of range (0 to 2**53)"
    if "seq_ack" in payload and not _is_int(payload["seq_ack"]):
        return 4020, "heartbeat seq_ack is not an integer"
    return None


def check_select_protocol(payload: Any, offered: tuple[str, ...]) -> Refusal | None:
    """op 1: ``{"protocol": "udp", "data": {"address", "port", "mode"}}``, the mode one
    READY offered."""
    if not isinstance(payload, dict) or payload.get("protocol") != "udp":
        return 4012, "unknown protocol"
    data = payload.get("data")
    if not isinstance(data, dict):
        return 4020, "select protocol without data"
    address, port = data.get("address"), data.get("port")
    if not isinstance(address, str) or not address or not _is_int(port):
        return 4020, "select protocol without a usable address and port"
    mode = data.get("mode")
    if not isinstance(mode, str) or mode not in offered:
        kind = "legacy" if mode in LEGACY_MODES else "unknown"
        return 4016, f"{kind} encryption mode"
    return None
