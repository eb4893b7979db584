"""pytest fixtures, registered automatically when wavegate is installed.

``websocket_server`` needs pytest-asyncio; without it, this plugin defines nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from .server import WebsocketTestServer

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - only users without pytest-asyncio
    pass
else:

    @pytest_asyncio.fixture
    async def websocket_server() -> AsyncIterator[WebsocketTestServer]:
        """A running :class:`WebsocketTestServer` on 127.0.0.1, stopped after the test."""
        async with WebsocketTestServer() as server:
            yield server
