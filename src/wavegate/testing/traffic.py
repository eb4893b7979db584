"""Numbered traffic both ways between a voice client and the fake gateway.

The client and the gateway each send numbered SPEAKING messages; at the end,
:meth:`Traffic.tally` says what arrived, what was lost and what was duplicated. The
demo, the soak and the tests use it to prove zero loss. Unlike the fake servers, this
helper drives both sides.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
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


class Sequence:
    """Checks numbers that should arrive as 0, 1, 2, ... without keeping them."""

    def __init__(self) -> None:
        self.next = 0
        self.count = 0
        self.missing: set[int] = set()
        self.duplicated = 0
        self.out_of_order = 0

    def add(self, number: int) -> None:
        """One number arrived."""
        self.count += 1
        if number == self.next:
            self.next += 1
        elif number > self.next:
            # A gap: those numbers are missing until (unless) they arrive late.
            self.missing.update(range(self.next, number))
            self.next = number + 1
        elif number in self.missing:
            self.missing.discard(number)
            self.out_of_order += 1
        else:
            self.duplicated += 1

    def lost(self, sent: int) -> set[int]:
        """Numbers below ``sent`` that never arrived."""
        return self.missing | set(range(self.next, sent))


@dataclass
class Traffic:
    """Client and gateway each send a numbered message every ``period`` seconds."""

    gateway: FakeVoiceGateway
    client: VoiceClient
    period: float = 0.004
    keep_history: bool = True
    """Keep every number received (for exact assertions). Without it, arrivals are
    checked as they come and forgotten (for long soaks), and the gateway's record of
    this user is consumed."""
    client_sent: int = 0
    server_sent: int = 0
    client_received: list[int] = field(default_factory=list)
    _generation_starts: list[tuple[int, int]] = field(default_factory=list)
    """``(first message number, session generation)`` at each change of generation."""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _running: bool = True
    _read_pause_until: float = 0.0
    _up: Sequence = field(default_factory=Sequence)
    _down: Sequence = field(default_factory=Sequence)

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
        generation = self.gateway.session(self.session_id).generation
        if not self._generation_starts or self._generation_starts[-1][1] != generation:
            self._generation_starts.append((number, generation))
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
                    self._down.add(message.ssrc)
                    if self.keep_history:
                        self.client_received.append(message.ssrc)
                if loop.time() < self._read_pause_until:
                    await asyncio.sleep(self._read_pause_until - loop.time())

    def server_received(self) -> list[int]:
        """The numbers the gateway received from this user, in order (with history)."""
        messages = self.gateway.received_by_user.get(self.user_id, [])
        return [data["ssrc"] for op, data in messages if op == 5]

    def _consume_server_record(self) -> None:
        messages = self.gateway.received_by_user.get(self.user_id)
        if messages is None:
            return
        for op, data in messages:
            if op == 5:
                self._up.add(data["ssrc"])
        if not self.keep_history:
            messages.clear()

    def check(self) -> None:
        """Check (and, without history, forget) what arrived so far."""
        if not self.keep_history:
            self._consume_server_record()

    async def run_for(self, count: int, timeout: float = 30.0) -> None:
        """Wait until both sides have sent ``count`` more messages.

        Raises:
            asyncio.TimeoutError: not within ``timeout`` seconds (the client is stuck).
        """
        loop = asyncio.get_running_loop()
        target_client, target_server = self.client_sent + count, self.server_sent + count
        deadline = loop.time() + timeout
        while self.client_sent < target_client or self.server_sent < target_server:
            if not self._running or (
                self.client.outcome is not None and self.server_sent >= target_server
            ):
                return
            if loop.time() > deadline:
                raise asyncio.TimeoutError(
                    f"traffic stalled: {self.client!r}, sent {self.client_sent}/{target_client}, "
                    f"server {self.server_sent}/{target_server}, "
                    f"pending {self.client.pending_sends}"
                )
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
        # Until everything arrived, except what the server invalidated (that never will).
        # Arrivals are counted in two processes' worth of state with no notification.
        while self.tally().lost and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        reader.cancel()
        await asyncio.wait(self._tasks)
        return self.tally()

    def _arrived_up(self) -> int:
        if self.keep_history:
            return len(self.server_received())
        self._consume_server_record()
        return self._up.count

    def _generation_of(self, number: int) -> int:
        index = bisect.bisect_right(self._generation_starts, (number, 1 << 62)) - 1
        return self._generation_starts[index][1] if index >= 0 else 0

    def tally(self) -> Tally:
        """What arrived so far, both ways."""
        if self.keep_history:
            up = Sequence()
            for number in self.server_received():
                up.add(number)
        else:
            self._consume_server_record()
            up = self._up
        down = self._down
        session = self.gateway.sessions.get(self.session_id)
        latest = session.generation if session is not None else 0
        missing_down = down.lost(self.server_sent)
        invalidated = sum(1 for number in missing_down if self._generation_of(number) < latest)
        return Tally(
            self.client_sent,
            up.count,
            self.server_sent,
            down.count,
            lost=len(up.lost(self.client_sent)) + len(missing_down) - invalidated,
            duplicated=up.duplicated + down.duplicated,
            out_of_order=up.out_of_order + down.out_of_order,
            invalidated=invalidated,
        )
