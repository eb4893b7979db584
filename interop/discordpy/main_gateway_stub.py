"""The smallest main gateway (v10) and REST API discord.py 2.7 needs to join a voice
channel, on one aiohttp port over plain HTTP and ws://.

It plays Discord's part around the voice connection: login answers two REST calls,
the gateway sends HELLO, acknowledges heartbeats, sends READY and one guild with a
voice channel, and answers each voice state update (op 4) as Discord does: a
VOICE_STATE_UPDATE, then (for a join) a VOICE_SERVER_UPDATE whose token is fresh from
the fake voice gateway's control API. ``order="server-first"`` swaps the two
dispatches, which Discord does not promise either way.

Only aiohttp is needed, so it runs inside the discord.py process (one event loop).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import aiohttp
from aiohttp import web

BOT_ID, GUILD, CHANNEL = "2001", "1001", "3001"
SESSION_ID = "main-session-2001"
HEARTBEAT_MS = 41250

USER = {
    "id": BOT_ID,
    "username": "wavebot",
    "discriminator": "0",
    "global_name": None,
    "avatar": None,
    "bot": True,
    "flags": 0,
    "mfa_enabled": False,
    "verified": True,
}
APPLICATION = {
    "id": "4001",
    "name": "wavebot",
    "description": "",
    "icon": None,
    "bot_public": False,
    "bot_require_code_grant": False,
    "owner": USER,
    "verify_key": "00",
    "flags": 0,
    "team": None,
    "summary": "",
}
MEMBER = {
    "user": USER,
    "roles": [],
    "joined_at": "2024-01-01T00:00:00+00:00",
    "deaf": False,
    "mute": False,
    "flags": 0,
}
VOICE_CHANNEL = {
    "id": CHANNEL,
    "type": 2,
    "guild_id": GUILD,
    "name": "voice",
    "position": 0,
    "bitrate": 64000,
    "user_limit": 0,
    "permission_overwrites": [],
    "parent_id": None,
    "rtc_region": None,
    "nsfw": False,
    "rate_limit_per_user": 0,
}
EVERYONE = {
    "id": GUILD,
    "name": "@everyone",
    "permissions": "3212288",
    "position": 0,
    "color": 0,
    "hoist": False,
    "managed": False,
    "mentionable": False,
    "flags": 0,
}
GUILD_CREATE = {
    "id": GUILD,
    "name": "wavegate",
    "owner_id": BOT_ID,
    "unavailable": False,
    "member_count": 1,
    "roles": [EVERYONE],
    "channels": [VOICE_CHANNEL],
    # The bot must be a member: discord.py's reconnect paths read guild.me.voice.
    "members": [MEMBER],
    "voice_states": [],
    "threads": [],
    "presences": [],
    "emojis": [],
    "stickers": [],
    "features": [],
    "stage_instances": [],
    "guild_scheduled_events": [],
    "soundboard_sounds": [],
}

Order = Literal["state-first", "server-first"]
Report = Callable[..., None]


def voice_state(channel_id: str | None) -> dict[str, Any]:
    """The VOICE_STATE_UPDATE Discord dispatches for the bot in ``channel_id``."""
    return {
        "guild_id": GUILD,
        "channel_id": channel_id,
        "user_id": BOT_ID,
        "session_id": SESSION_ID,
        "deaf": False,
        "mute": False,
        "self_deaf": False,
        "self_mute": False,
        "self_video": False,
        "suppress": False,
        "request_to_speak_timestamp": None,
        "member": MEMBER,
    }


def exact_json(payload: Any, status: int = 200) -> web.Response:
    """JSON with Content-Type exactly ``application/json``: discord.py parses nothing
    else (aiohttp's ``json_response`` adds ``; charset=utf-8``)."""
    body = json.dumps(payload).encode()
    return web.Response(body=body, status=status, headers={"Content-Type": "application/json"})


class MainGatewayStub:
    """REST and main gateway for one bot in one guild; ``report(event, **fields)``
    hears every op 4 and every main-gateway connection."""

    def __init__(self, endpoint: str, control: str, report: Report, order: Order) -> None:
        self.endpoint = endpoint
        self.control = control
        self.report = report
        self.order = order
        self.asked = 0
        self._seq = 0
        self._http: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.on_cleanup.append(self._close_http)
        return app

    async def _close_http(self, _app: web.Application) -> None:
        if self._http is not None:
            await self._http.close()

    async def _rest(self, request: web.Request) -> web.Response:
        path = request.path.removeprefix("/api/v10")
        if path == "/users/@me":
            return exact_json(USER)
        if path == "/oauth2/applications/@me":
            return exact_json(APPLICATION)
        self.report("rest-unknown", method=request.method, path=path)
        return exact_json({"message": "404: Not Found", "code": 0}, status=404)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.report("main-gateway", query=request.query_string)
        await self._send(ws, 10, {"heartbeat_interval": HEARTBEAT_MS})
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(message.data)
            await self._answer(ws, request.host, frame["op"], frame["d"])
        return ws

    async def _answer(self, ws: web.WebSocketResponse, host: str, op: int, data: Any) -> None:
        if op == 1:
            await self._send(ws, 11, None)
        elif op == 2:
            await self._dispatch(ws, "READY", self._ready(host))
            await self._dispatch(ws, "GUILD_CREATE", GUILD_CREATE)
        elif op == 6:
            await self._dispatch(ws, "RESUMED", None)
        elif op == 4:
            await self._voice_state_update(ws, data["channel_id"])

    @staticmethod
    def _ready(host: str) -> dict[str, Any]:
        return {
            "v": 10,
            "user": USER,
            "guilds": [{"id": GUILD, "unavailable": True}],
            "session_id": "main-gateway-session",
            "resume_gateway_url": f"ws://{host}/gateway",
            "application": {"id": APPLICATION["id"], "flags": 0},
            "private_channels": [],
            "relationships": [],
        }

    async def _voice_state_update(self, ws: web.WebSocketResponse, channel: Any) -> None:
        self.asked += 1
        channel_id = None if channel is None else str(channel)
        self.report("op4", asked=self.asked, channel_id=channel_id)
        state = voice_state(channel_id)
        if channel_id is None:
            await self._dispatch(ws, "VOICE_STATE_UPDATE", state)
            return
        server = {"guild_id": GUILD, "token": await self._fresh_token(), "endpoint": self.endpoint}
        updates = [("VOICE_STATE_UPDATE", state), ("VOICE_SERVER_UPDATE", server)]
        if self.order == "server-first":
            updates.reverse()
        for name, payload in updates:
            await self._dispatch(ws, name, payload)

    async def _fresh_token(self) -> str:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        async with self._http.post(f"{self.control}/users/{BOT_ID}/token") as answer:
            answer.raise_for_status()
            token: str = (await answer.json())["token"]
            return token

    async def _dispatch(self, ws: web.WebSocketResponse, name: str, data: Any) -> None:
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "s": self._seq, "t": name, "d": data}))

    @staticmethod
    async def _send(ws: web.WebSocketResponse, op: int, data: Any) -> None:
        await ws.send_str(json.dumps({"op": op, "s": None, "t": None, "d": data}))
