"""Received packet types: what ``Websocket.receive()`` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class WebsocketPacket:
    """Base of every received packet."""

    __slots__ = ()


# Slotted, non-frozen dataclasses: a frozen dataclass's __init__ goes through
# object.__setattr__, which is measurably slower on the receive hot path.
@dataclass(slots=True)
class WebsocketPacketBytes(WebsocketPacket):
    """A binary frame."""

    payload: bytes


@dataclass(slots=True)
class WebsocketPacketJSON(WebsocketPacket):
    """A text frame decoded as a JSON object."""

    payload: dict[str, Any]


@dataclass(slots=True)
class WebsocketPacketText(WebsocketPacket):
    """A text frame, undecoded (``Websocket(receive_mode="text")``)."""

    payload: str
