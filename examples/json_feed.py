"""A gateway client for a protocol that is not Discord's: a JSON feed of numbered
messages, with its own handshake, heartbeat and resume, on wavegate's session.

The protocol (``FeedProtocol``) is sans-I/O: it turns what arrives into outputs and
never touches a socket or a clock, so it is tested by feeding it dicts. The session
owns the connection, the heartbeats, the backoff and the resume. The server here
(aiohttp.web, on 127.0.0.1) hangs up every 12 messages, with close code 4000 or with
no close frame at all; the client resumes after each and misses nothing.

Run it: ``python examples/json_feed.py``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from wavegate import GENERIC, Action, Backoff, Session, Websocket
from wavegate.packets import WebsocketPacket, WebsocketPacketJSON
from wavegate.protocol import Deliver, HandshakeDone, HeartbeatAck, Output, Send

# The feed's close codes: 4000 "going away, resume", 4001 "unknown session".
FEED_POLICY = GENERIC.derive(
    "feed",
    codes={4000: Action.RESUME, 4001: Action.RECONNECT},
    no_close_frame=Action.RESUME,
)


class FeedProtocol:
    """The client side of the feed, as a state machine (wavegate.GatewayProtocol).

    hello -> welcome {session, heartbeat_ms}; resume {session, after} -> resumed;
    ping {nonce} -> pong {nonce}; then {"op": "message", "id": n, ...}.
    """

    def __init__(self) -> None:
        self.session: str | None = None
        self.last = 0  # the last message id delivered

    def start(self, *, resume: bool) -> Sequence[Output]:
        if resume:
            return [Send({"op": "resume", "session": self.session, "after": self.last})]
        return [Send({"op": "hello"})]

    def receive(self, packet: WebsocketPacket) -> Sequence[Output]:
        if not isinstance(packet, WebsocketPacketJSON):
            return []
        message = packet.payload
        op = message.get("op")
        if op == "welcome":
            self.session = message["session"]
            return [HandshakeDone(message["heartbeat_ms"] / 1000, resumed=False)]
        if op == "resumed":
            return [HandshakeDone(message["heartbeat_ms"] / 1000, resumed=True)]
        if op == "pong":
            return [HeartbeatAck(message["nonce"])]
        if op == "message" and message["id"] > self.last:  # a replay may repeat one
            self.last = message["id"]
            return [Deliver(message)]
        return []

    def heartbeat(self, nonce: int) -> dict[str, Any]:
        return {"op": "ping", "nonce": nonce}

    def can_resume(self) -> bool:
        return self.session is not None

    def new_session(self) -> None:
        self.session, self.last = None, 0


class FeedServer:
    """The feed: numbered messages, a buffer for resumes, a hang-up every ``every``."""

    def __init__(self, every: int = 12) -> None:
        self.every = every
        self.sent: list[dict[str, Any]] = []
        self.ids = itertools.count(1)
        self.connections = 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        hello = await ws.receive_json()
        if hello["op"] == "resume":
            await ws.send_json({"op": "resumed", "heartbeat_ms": 500})
            for message in self.sent[hello["after"] :]:
                await ws.send_json(message)
        else:
            await ws.send_json({"op": "welcome", "session": "feed-1", "heartbeat_ms": 500})
        await asyncio.gather(self._pong(ws), self._publish(ws, request), return_exceptions=True)
        return ws

    async def _pong(self, ws: web.WebSocketResponse) -> None:
        async for frame in ws:
            message = frame.json()
            if message["op"] == "ping":
                await ws.send_json({"op": "pong", "nonce": message["nonce"]})

    async def _publish(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        for _ in range(self.every):
            message = {"op": "message", "id": next(self.ids), "text": "tick"}
            self.sent.append(message)
            await ws.send_json(message)
        if self.connections % 2:
            await ws.close(code=4000, message=b"going away, resume")
        elif request.transport is not None:
            request.transport.abort()  # no close frame at all


async def main(count: int = 40) -> list[int]:
    server = FeedServer()
    app = web.Application()
    app.router.add_get("/feed", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        session = Session(
            f"ws://127.0.0.1:{port}/feed",
            FeedProtocol(),
            websocket=Websocket(policy=FEED_POLICY),
            backoff=Backoff(base=0.05, cap=1.0),
        )
        async with session:
            ids = [(await session.receive())["id"] for _ in range(count)]
        print(f"{count} messages over {server.connections} connections, in order: "
              f"{ids == list(range(1, count + 1))}; resumes: {session.stats.resumes}")  # fmt: skip
        return ids
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
