"""Types of the compiled picows listener (``_picows_listener.pyx``)."""

from typing import Any

BUILT_AGAINST: str
"""The picows minor version whose C layouts the module was compiled against."""

class Listener:
    """One connection's receive side, a ``picows.WSListener`` written in Cython."""

    def __init__(self, owner: Any, max_size: int) -> None: ...
    def poll(self) -> str | bytes | None:
        """The next message if one has arrived, else ``None``."""

    async def recv(self) -> str | bytes:
        """Wait for the next message; raise the owner's ending once there is none."""

    async def ping(self) -> Any:
        """Send a ping; return a future resolved by its pong."""

    @property
    def waiting(self) -> int:
        """Messages received and not yet taken."""
