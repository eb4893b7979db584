"""Types of the compiled picows listener (``_picows_listener.pyx``)."""

import asyncio
from collections.abc import Callable
from typing import Any

from ..packets import (
    WebsocketPacket,
    WebsocketPacketBytes,
    WebsocketPacketJSON,
    WebsocketPacketText,
)
from ..signals import PayloadError

BUILT_AGAINST: str
"""The picows version whose C layouts the module was compiled against."""
API: int
"""What the transport may call (raised with each change)."""

class Listener:
    """One connection's receive side, a ``picows.WSListener`` written in Cython."""

    def __init__(self, owner: Any, max_size: int) -> None: ...
    taken_frames: int
    taken_bytes: int
    def configure(
        self,
        loads: Callable[[bytes | str], Any],
        decode_json: bool,
        json_packet: type[WebsocketPacketJSON],
        text_packet: type[WebsocketPacketText],
        bytes_packet: type[WebsocketPacketBytes],
        payload_error: type[PayloadError],
    ) -> None:
        """How ``take()`` makes packets."""

    def take(self) -> WebsocketPacket | None:
        """The next message as a packet if one has arrived, else ``None``."""

    async def recv(self) -> str | bytes:
        """Wait for the next message; raise the owner's ending once there is none."""

    def unpause(self) -> None:
        """Read the socket again even if messages wait unread."""

    def ping_now(self) -> asyncio.Future[None]:
        """Send a ping; return a future resolved by its pong."""

    @property
    def waiting(self) -> int:
        """Messages received and not yet taken."""
