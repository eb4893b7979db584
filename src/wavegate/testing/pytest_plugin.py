"""pytest fixtures, registered automatically when wavegate is installed.

- ``websocket_server``: a running :class:`~wavegate.testing.WebsocketTestServer`.
- ``fake_voice_gateway``: a running :class:`~wavegate.testing.voice.FakeVoiceGateway`
  (needs the ``voice`` extra, as the voice client does).

Both are pytest-asyncio fixtures, so they work in its strict mode (mark your tests
``@pytest.mark.asyncio``) and in auto mode. They run on the loop pytest-asyncio gives
fixtures (``asyncio_default_fixture_loop_scope``), which must be the tests' loop: keep
``asyncio_default_test_loop_scope`` the same, or make a fixture of your tests' loop
scope (``async with WebsocketTestServer() as server: yield server``). Without
pytest-asyncio this plugin defines nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .server import WebsocketTestServer

if TYPE_CHECKING:
    from .voice import FakeVoiceGateway

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

    @pytest_asyncio.fixture
    async def fake_voice_gateway() -> AsyncIterator[FakeVoiceGateway]:
        """A running fake Discord voice gateway (``ws://127.0.0.1:PORT/?v=8``), stopped
        after the test."""
        from .voice import FakeVoiceGateway

        async with FakeVoiceGateway() as gateway:
            yield gateway
