"""Autobahn|Testsuite echo client written on wavegate's public Websocket.

    python -m conformance.client URL TRANSPORT [deflate]

Runs every case the fuzzing server offers (its config chooses them): each message
is echoed back as it came (text as text, binary as binary) until the case ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

from wavegate import (
    GENERIC,
    Signal,
    Websocket,
    WebsocketPacketBytes,
    WebsocketPacketText,
)

COMPRESSION = False


def websocket(transport: str) -> Websocket:
    return Websocket(
        transport=transport,
        compression=COMPRESSION,
        policy=GENERIC,
        receive_mode="text",
        max_size=64 << 20,  # case 9.x sends messages of up to 16 MiB
        ping_interval=None,
        open_timeout=10,
        close_timeout=5,
    )


async def case_count(base: str, transport: str) -> int:
    ws = websocket(transport)
    await ws.connect(f"{base}/getCaseCount")
    packet = await ws.receive()
    await ws.disconnect()
    assert isinstance(packet, WebsocketPacketText)
    return int(packet.payload)


async def run_case(base: str, transport: str, case: int, agent: str) -> None:
    ws = websocket(transport)
    try:
        await ws.connect(f"{base}/runCase?case={case}&agent={agent}")
        while True:
            packet = await ws.receive()
            if isinstance(packet, WebsocketPacketBytes):
                await ws.send_bytes(packet.payload)
            elif isinstance(packet, WebsocketPacketText):
                await ws.send_text(packet.payload)
    except Signal:
        pass  # the case is over, whichever way it ended
    finally:
        await ws.disconnect()


async def main(base: str, transport: str) -> None:
    agent = f"wavegate-{transport}"
    if transport == "picows" and os.environ.get("WAVEGATE_PICOWS_LISTENER") == "python":
        agent = "wavegate-picows-python"  # picows' own connection (no compiled listener)
    total = await case_count(base, transport)
    print(f"{agent}: {total} cases", flush=True)
    for case in range(1, total + 1):
        await asyncio.wait_for(run_case(base, transport, case, agent), 120)
    ws = websocket(transport)
    await ws.connect(f"{base}/updateReports?agent={agent}")
    with contextlib.suppress(Signal):
        await ws.receive()
    await ws.disconnect()


if __name__ == "__main__":
    COMPRESSION = sys.argv[3:] == ["deflate"]
    asyncio.run(main(sys.argv[1].rstrip("/"), sys.argv[2]))
