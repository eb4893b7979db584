"""Numbered traffic both ways between a VoiceClient and the fake gateway, to prove zero loss."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from wavegate.discord.voice import Speaking, VoiceClient, VoiceCredentials
from wavegate.signals import SessionClosedError
from wavegate.testing.voice import FakeVoiceGateway

CREDENTIALS = VoiceCredentials("guild-1", "user-1", "session-SECRET-ID", "token-SECRET-VALUE")


@dataclass
class Traffic:
    """Client and server each send numbered SPEAKING messages every ``period`` seconds."""

    gateway: FakeVoiceGateway
    client: VoiceClient
    period: float = 0.004
    client_sent: int = 0
    server_sent: int = 0
    client_received: list[int] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _running: bool = True

    @property
    def session_id(self) -> str:
        return self.client.protocol.credentials.session_id

    @property
    def user_id(self) -> str:
        return self.client.protocol.credentials.user_id

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._client_sender()),
            asyncio.create_task(self._server_sender()),
            asyncio.create_task(self._client_reader()),
        ]

    async def _client_sender(self) -> None:
        while self._running:
            try:
                await self.client.send_speaking(1, ssrc=self.client_sent)
            except SessionClosedError:
                return  # the session stopped: this message was reported as not sent
            self.client_sent += 1
            await asyncio.sleep(self.period)

    async def _server_sender(self) -> None:
        while self._running:
            try:
                await self.gateway.wait_live(self.session_id, timeout=0.05)
            except asyncio.TimeoutError:
                continue
            await self.gateway.send_speaking(self.session_id, self.server_sent)
            self.server_sent += 1
            await asyncio.sleep(self.period)

    async def _client_reader(self) -> None:
        with contextlib.suppress(SessionClosedError):
            async for message in self.client:
                if isinstance(message, Speaking) and message.user_id == self.user_id:
                    self.client_received.append(message.ssrc)

    def server_received(self) -> list[int]:
        return [
            d["ssrc"] for op, d in self.gateway.received_by_user.get(self.user_id, []) if op == 5
        ]

    async def run_for(self, count: int) -> None:
        """Wait until both sides have sent ``count`` more messages."""
        target_client, target_server = self.client_sent + count, self.server_sent + count
        while self.client_sent < target_client or self.server_sent < target_server:
            await asyncio.sleep(self.period)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop sending, wait for everything in flight to arrive, stop reading."""
        self._running = False
        client_sender, server_sender = self._tasks[:2]
        await asyncio.wait_for(server_sender, timeout)
        if self.client.outcome is None:
            await asyncio.wait_for(client_sender, timeout)
        else:  # stopped: a send may be waiting on a session that will never be ready
            client_sender.cancel()
            await asyncio.wait({client_sender})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (
            len(self.server_received()) < self.client_sent
            or len(self.client_received) < self.server_sent
        ):
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.005)
        self._tasks[2].cancel()
        await asyncio.wait(self._tasks)

    def assert_nothing_lost(self) -> None:
        """Every number arrived exactly once, in order, both ways."""
        assert self.client_sent > 0
        assert self.server_sent > 0
        assert self.server_received() == list(range(self.client_sent))
        assert self.client_received == list(range(self.server_sent))
