"""Numbered traffic both ways between a voice client and the fake gateway.

The client and the gateway each send numbered SPEAKING messages; at the end,
:meth:`Traffic.tally` says what arrived, what was lost and what was duplicated. The
demo, the soak and the tests use it to prove zero loss. Unlike the fake servers, this
helper drives both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field

from ..discord.voice import Speaking, VoiceClient
from ..signals import SessionClosedError
from .voice import FakeVoiceGateway


@dataclass(frozen=True)
class Tally:
    """What numbered traffic achieved, both ways."""

    client_sent: int
    server_received: int
    server_sent: int
    client_received: int
    lost: int
    duplicated: int
    out_of_order: int
    invalidated: int = 0
    """Server messages of a session the server replaced (a new IDENTIFY) that never
    arrived: lost by the protocol's design (no replay across sessions), not silently."""

    @property
    def perfect(self) -> bool:
        """Everything arrived exactly once, in order."""
        return self.lost == 0 and self.duplicated == 0 and self.out_of_order == 0


def _compare(sent: int, received: list[int]) -> tuple[int, int, int]:
    expected = set(range(sent))
    seen = set(received)
    lost = len(expected - seen)
    duplicated = len(received) - len(seen)
    out_of_order = sum(1 for a, b in itertools.pairwise(received) if b <= a)
    return lost, duplicated, out_of_order


@dataclass
class Traffic:
    """Client and gateway each send a numbered message every ``period`` seconds."""

    gateway: FakeVoiceGateway
    client: VoiceClient
    period: float = 0.004
    client_sent: int = 0
    server_sent: int = 0
    client_received: list[int] = field(default_factory=list)
    server_generations: list[int] = field(default_factory=list)
    """The session generation each server message was sent in."""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _running: bool = True
    _read_pause_until: float = 0.0

    def pause_reading(self, seconds: float) -> None:
        """The application stops reading for ``seconds`` (a slow consumer)."""
        self._read_pause_until = asyncio.get_running_loop().time() + seconds

    @property
    def session_id(self) -> str:
        return self.client.protocol.credentials.session_id

    @property
    def user_id(self) -> str:
        return self.client.protocol.credentials.user_id

    def start(self) -> None:
        """Start the two senders and the client's reader."""
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
            await self._server_send()
            await asyncio.sleep(self.period)

    async def _server_send(self) -> None:
        number = self.server_sent  # taken before the await: bursts may interleave
        self.server_sent += 1
        self.server_generations.append(self.gateway.session(self.session_id).generation)
        await self.gateway.send_speaking(self.session_id, number)

    async def server_burst(self, count: int) -> None:
        """The gateway sends ``count`` numbered messages now, live or not: while the
        client is away they wait in the replay buffer."""
        for _ in range(count):
            await self._server_send()

    async def _client_reader(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(SessionClosedError):
            async for message in self.client:
                if isinstance(message, Speaking) and message.user_id == self.user_id:
                    self.client_received.append(message.ssrc)
                if loop.time() < self._read_pause_until:
                    await asyncio.sleep(self._read_pause_until - loop.time())

    def server_received(self) -> list[int]:
        """The numbers the gateway received from this user, in order."""
        messages = self.gateway.received_by_user.get(self.user_id, [])
        return [data["ssrc"] for op, data in messages if op == 5]

    async def run_for(self, count: int) -> None:
        """Wait until both sides have sent ``count`` more messages."""
        target_client, target_server = self.client_sent + count, self.server_sent + count
        while self._running and (
            self.client_sent < target_client or self.server_sent < target_server
        ):
            if self.client.outcome is not None and self.server_sent >= target_server:
                return
            await asyncio.sleep(self.period)

    async def stop(self, timeout: float = 10.0) -> Tally:
        """Stop sending, wait (at most ``timeout`` s) for what is in flight, and tally."""
        self._running = False
        client_sender, server_sender, reader = self._tasks
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
        reader.cancel()
        await asyncio.wait(self._tasks)
        return self.tally()

    def tally(self) -> Tally:
        """What arrived so far, both ways."""
        received = self.server_received()
        up = _compare(self.client_sent, received)
        down = _compare(self.server_sent, self.client_received)
        session = self.gateway.sessions.get(self.session_id)
        latest = session.generation if session is not None else 0
        missing = set(range(self.server_sent)) - set(self.client_received)
        invalidated = sum(1 for number in missing if self.server_generations[number] < latest)
        return Tally(
            self.client_sent,
            len(received),
            self.server_sent,
            len(self.client_received),
            lost=up[0] + down[0] - invalidated,
            duplicated=up[1] + down[1],
            out_of_order=up[2] + down[2],
            invalidated=invalidated,
        )
