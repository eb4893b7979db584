"""discord.py's voice client (pinned in requirements.txt) joining a channel on
``wavegate serve``, with the main gateway and REST played by main_gateway_stub.

Runs in its own venv (``make interop`` makes ``.venv-discordpy``). discord.py is
pointed at the stub by its two documented-in-source class attributes (``Route.BASE``,
``DiscordWebSocket.DEFAULT_GATEWAY``) and trusts the fake's CA through its aiohttp
connector; nothing else of discord.py is changed. To observe it, the adapter wraps
the voice connection's state setter and the voice websocket's send and receive
methods, reporting each call and passing it on unchanged.

Prints one JSON line per event on stdout; leaves the channel and exits on stdin EOF.

    python discordpy_client.py ENDPOINT CONTROL_URL CA_FILE [--order server-first]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import ssl
import sys
import traceback
from collections.abc import Callable
from typing import Any

import aiohttp
import discord
import yarl
from aiohttp import web
from discord.gateway import DiscordVoiceWebSocket, DiscordWebSocket
from discord.http import Route
from discord.voice_state import VoiceConnectionState
from main_gateway_stub import CHANNEL, MainGatewayStub


def say(event: str, **fields: Any) -> None:
    """One JSON line on stdout."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def observe_voice() -> None:
    """Report discord.py's voice state changes and voice websocket traffic."""
    state = VoiceConnectionState.state
    if not isinstance(state, property) or state.fset is None:
        raise RuntimeError("discord.py changed: VoiceConnectionState.state is no property")
    setter = state.fset

    def set_state(self: Any, value: Any) -> None:
        if value is not self._state:
            say("state", to=value.name)
        setter(self, value)

    VoiceConnectionState.state = state.setter(set_state)
    wrap(DiscordVoiceWebSocket, "send_as_json", lambda data: ("sent", data.get("op"), data))
    wrap(DiscordVoiceWebSocket, "send_binary", lambda op, _data: ("sent", op, None))
    wrap(DiscordVoiceWebSocket, "received_message", lambda m: ("received", m.get("op"), m))
    wrap(DiscordVoiceWebSocket, "received_binary_message", lambda m: ("received", m[2], None))


def wrap(cls: Any, name: str, describe: Callable[..., tuple[str, Any, Any]]) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    async def reporting(self: Any, *args: Any) -> Any:
        event, op, payload = describe(*args)
        data = payload.get("d") if isinstance(payload, dict) else None
        say(event, op=op, keys=sorted(data) if isinstance(data, dict) else None)
        return await original(self, *args)

    setattr(cls, name, reporting)


async def run(options: argparse.Namespace) -> None:
    stub = MainGatewayStub(options.endpoint, options.control, say, options.order)
    runner = web.AppRunner(stub.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    Route.BASE = f"http://127.0.0.1:{port}/api/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{port}/gateway")
    try:
        await join_until_eof(options)
    finally:
        await runner.cleanup()


async def join_until_eof(options: argparse.Namespace) -> None:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.voice_states = True
    trust = ssl.create_default_context(cafile=options.ca)
    connector = aiohttp.TCPConnector(limit=0, ssl=trust)
    client = discord.Client(intents=intents, connector=connector, guild_ready_timeout=0.1)
    ready = asyncio.Event()
    client.event(on_ready_setting(ready))
    starting = asyncio.create_task(client.start("stub-bot-token"))
    await asyncio.wait({starting, asyncio.create_task(ready.wait())}, return_when="FIRST_COMPLETED")
    if starting.done():
        starting.result()
    say("ready")
    voice = None
    try:
        voice = await client.get_channel(int(CHANNEL)).connect(timeout=options.timeout)
        connection = voice._connection
        say("voice", mode=voice.mode, dave=connection.dave_protocol_version)
    except Exception as exc:
        say("error", type=type(exc).__name__, message=str(exc))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    if voice is not None and voice.is_connected():
        await voice.disconnect()
    await client.close()
    await starting


def on_ready_setting(ready: asyncio.Event) -> Callable[[], Any]:
    async def on_ready() -> None:
        ready.set()

    return on_ready


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("control")
    parser.add_argument("ca")
    parser.add_argument("--order", choices=["state-first", "server-first"], default="state-first")
    parser.add_argument("--timeout", type=float, default=30.0)
    observe_voice()
    try:
        asyncio.run(run(parser.parse_args()))
    except BaseException as exc:
        say("crash", type=type(exc).__name__, trace=traceback.format_exc())
        raise
    say("bye")


if __name__ == "__main__":
    main()
