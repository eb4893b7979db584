"""pytest fixtures, registered automatically when wavegate is installed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from .server import WebsocketTestServer


@pytest_asyncio.fixture
async def websocket_server() -> AsyncIterator[WebsocketTestServer]:
    """A running :class:`WebsocketTestServer` on 127.0.0.1, stopped after the test."""
    async with WebsocketTestServer() as server:
        yield server
