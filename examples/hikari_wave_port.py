"""hikari-wave's voice gateway loop, ported to wavegate's Websocket.

The shape is hikari-wave 0.7's ``VoiceGateway``: connect, wait for HELLO, start a
heartbeat task, IDENTIFY (or RESUME), then a listen loop. What the port changes is
what happens when the connection ends: each ending is one wavegate signal, and the
loop acts on it (resume at once with ``seq_ack``, reconnect with backoff, or stop),
where hikari-wave queues a report that nothing acts on.

Run against wavegate's fake voice gateway: it resumes after a 4015, starts a new
session with a fresh token after a 4006, and stops on 4014. ``python examples/hikari_wave_port.py``
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from wavegate import DisconnectSignal, ReconnectSignal, ResumeSignal, Websocket
from wavegate.testing.voice import FakeVoiceGateway

IDS = {"server_id": "1001", "user_id": "2001", "session_id": "session-1"}


class VoiceGatewayLoop:
    """One voice gateway connection, kept alive the way the policy says."""

    def __init__(self, url: str, fresh_token: Callable[[], Awaitable[str]]) -> None:
        self.url, self.fresh_token, self.token = url, fresh_token, ""
        self.ws = Websocket()  # the DISCORD_VOICE policy: 4015 resume, 4006 reconnect...
        self.seq = -1  # the last numbered message seen: RESUME's seq_ack
        self.log: list[str] = []

    async def run(self) -> None:
        resume, failures = False, 0
        self.token = await self.fresh_token()
        while True:
            heartbeat: asyncio.Task[None] | None = None
            try:
                await self.ws.connect(self.url)
                hello = (await self.ws.receive()).payload  # type: ignore[attr-defined]
                interval = hello["d"]["heartbeat_interval"] / 1000
                heartbeat = asyncio.create_task(self._heartbeat(interval))
                await self._identify_or_resume(resume)
                await self._listen()
            except ResumeSignal as signal:  # 4015, a TCP drop: the same session, at once
                self.log.append(f"resume after {signal.code}")
                resume = True
            except ReconnectSignal as signal:  # 4006, refused: a new session, backed off
                self.log.append(f"new session after {signal.code}")
                resume, self.seq, failures = False, -1, failures + 1
                await asyncio.sleep(random.uniform(0, min(5.0, 0.1 * 2**failures)))
                # 4006 ended the voice session and its token: a new session needs a new
                # one (on Discord: send op 4 again and wait for VOICE_SERVER_UPDATE).
                self.token = await self.fresh_token()
            except DisconnectSignal as signal:  # 4014, 4017, 4021...: stop for good
                self.log.append(f"stopped by {signal.code}")
                return
            finally:
                if heartbeat is not None:
                    heartbeat.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await heartbeat

    async def _identify_or_resume(self, resume: bool) -> None:
        if resume:
            payload = {**IDS, "token": self.token, "seq_ack": self.seq}
            del payload["user_id"]
            await self.ws.send_json({"op": 7, "d": payload})
        else:
            await self.ws.send_json({"op": 0, "d": {**IDS, "token": self.token}})

    async def _listen(self) -> None:
        async for packet in self.ws:  # a DisconnectSignal ends it; the others raise
            message: dict[str, Any] = packet.payload  # type: ignore[attr-defined]
            self.seq = message.get("seq", self.seq)
            if message["op"] == 2:
                self.log.append("ready")
            elif message["op"] == 9:
                self.log.append("resumed")
        assert self.ws.last_signal is not None
        raise self.ws.last_signal.copy()  # the DisconnectSignal that ended the loop

    async def _heartbeat(self, interval: float) -> None:
        while True:
            nonce = int(time.time() * 1000)
            await self.ws.send_json({"op": 3, "d": {"t": nonce, "seq_ack": self.seq}})
            await asyncio.sleep(interval)


async def main() -> list[str]:
    async with FakeVoiceGateway(require_dave=False, heartbeat_interval=0.2) as gateway:

        async def fresh_token() -> str:  # what VOICE_SERVER_UPDATE brings
            return gateway.fresh_token("2001")

        loop = VoiceGatewayLoop(gateway.url, fresh_token)
        running = asyncio.create_task(loop.run())
        for code in (4015, 4006):
            await gateway.close_session("session-1", code, "crashed")
        await gateway.wait_live("session-1")
        await gateway.close_session("session-1", 4014, "kicked")
        await asyncio.wait_for(running, 10)
    print(", ".join(loop.log))
    return loop.log


if __name__ == "__main__":
    asyncio.run(main())
