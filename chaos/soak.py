"""Chaos soak: many voice sessions on the fake gateway under seeded random faults.

    python -m chaos.soak [--duration 120] [--sessions 16] [--seed N]

Every fault kind is injected at random: close codes from every preset, TCP resets,
stalled and rejected handshakes, lost and late heartbeat ACKs, expired replay buffers,
malformed frames, slow readers. Clients that stop (a final code) are replaced. At the
end: every message must have arrived exactly once, in order, or have been reported to
its sender as failed; no task, file descriptor or memory may leak. The seed is printed
first, so any failure can be replayed with ``--seed``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from wavegate import DISCORD_GATEWAY, DISCORD_VOICE, GENERIC, Backoff, Websocket
from wavegate.discord.voice import VoiceClient, VoiceCredentials
from wavegate.testing.traffic import Tally, Traffic
from wavegate.testing.voice import FakeVoiceGateway
from wavegate.transport import TRANSPORTS

CODES = sorted(
    {*DISCORD_VOICE.codes, *DISCORD_GATEWAY.codes, *GENERIC.codes, 4013, 4999, 3000} - {1005, 1006}
)
FAULTS = [
    "close",
    "reset",
    "stall",
    "reject",
    "mute",
    "late_acks",
    "expire",
    "malformed",
    "slow_reader",
]


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class Run:
    """Counters of a soak run."""

    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    tallies: list[Tally] = field(default_factory=list)
    stopped: int = 0
    resumes: int = 0
    reconnects: int = 0


def _refreshing(
    gateway: FakeVoiceGateway, credentials: VoiceCredentials
) -> Callable[[], Awaitable[VoiceCredentials]]:
    async def refresh() -> VoiceCredentials:
        return replace(credentials, token=gateway.fresh_token(credentials.user_id))

    return refresh


async def start_client(
    gateway: FakeVoiceGateway, user: int, generation: int, rng: random.Random
) -> Traffic:
    credentials = VoiceCredentials(
        str(100 + user),
        str(5000 + user),
        f"session-{user}-{generation}",
        f"token-{user}",
        str(100 + user),
    )
    websocket = Websocket(transport=rng.choice(TRANSPORTS), open_timeout=0.5, close_timeout=0.5)
    client = VoiceClient(
        gateway.url,
        credentials,
        websocket=websocket,
        backoff=Backoff(base=0.02, cap=0.3, max_attempts=None, reset_after=2.0),
        handshake_timeout=2.0,
        refresh_credentials=_refreshing(gateway, credentials),
    )
    await client.start()
    traffic = Traffic(gateway, client, period=0.02, keep_history=False)
    traffic.start()
    return traffic


async def inject(
    gateway: FakeVoiceGateway, traffic: Traffic, kind: str, rng: random.Random
) -> None:
    session_id = traffic.session_id
    if kind == "close":
        await gateway.close_session(session_id, rng.choice(CODES), "chaos")
    elif kind == "reset":
        await gateway.drop(session_id)
    elif kind in ("stall", "reject"):
        gateway.stall_handshakes() if kind == "stall" else gateway.reject_handshakes(
            rng.choice([429, 503, 502])
        )
        await gateway.drop(session_id)
        await asyncio.sleep(rng.uniform(0.1, 0.6))
        gateway.accept_handshakes()
    elif kind == "mute":
        gateway.stop_acking(session_id)
    elif kind == "late_acks":
        gateway.delay_acks(session_id, rng.uniform(0.01, 0.08))
    elif kind == "expire":
        gateway.expire(session_id)
        await gateway.close_session(session_id, 4015, "chaos")
    elif kind == "malformed":
        conn = gateway.session(session_id).conn
        if conn is not None:
            await conn.send_text(rng.choice(["{not json", "[1,2]", "null", '{"op": 5, "d": 7}']))
            await conn.send_bytes(b"\x01")  # shorter than a voice binary header
    elif kind == "slow_reader":
        traffic.pause_reading(rng.uniform(0.05, 0.5))


async def soak(duration: float, sessions: int, seed: int) -> int:
    rng = random.Random(seed)
    run = Run()
    baseline_tasks = len(asyncio.all_tasks())
    baseline_fds = open_fds()
    # An error nobody retrieved (a task's exception, a callback's) is something lost:
    # count it, show it, and fail.
    unhandled: list[str] = []
    loop = asyncio.get_running_loop()

    def seen(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        unhandled.append(str(context.get("message")))
        loop.default_exception_handler(context)

    loop.set_exception_handler(seen)
    async with FakeVoiceGateway(
        heartbeat_interval=0.1, replay_size=256, keep_received=False
    ) as gateway:
        generations = [0] * sessions
        traffics = [await start_client(gateway, user, 0, rng) for user in range(sessions)]
        loop = asyncio.get_running_loop()
        started = loop.time()
        rss_after_warmup: int | None = None
        next_report = started + 10
        while loop.time() - started < duration:
            if loop.time() >= next_report:
                next_report += 10
                gc.collect()
                print(f"  {loop.time() - started:5.0f}s  RSS {rss_kib() / 1024:.1f} MB", flush=True)
            if rss_after_warmup is None and loop.time() - started > duration / 4:
                gc.collect()
                rss_after_warmup = rss_kib()
            await asyncio.sleep(rng.uniform(0.01, 0.06))
            for each in traffics:
                each.check()  # verify arrivals as they come, and forget them
            user = rng.randrange(sessions)
            traffic = traffics[user]
            if traffic.client.outcome is not None:  # stopped by a final code: replace it
                run.tallies.append(await traffic.stop())
                gateway.sessions.pop(traffic.session_id, None)  # a new user replaces it
                run.stopped += 1
                run.resumes += traffic.client.stats.resumes
                run.reconnects += traffic.client.stats.reconnects
                generations[user] += 1
                traffics[user] = await start_client(gateway, user, generations[user], rng)
                continue
            session = gateway.sessions.get(traffic.session_id)
            if session is None or not session.live.is_set():
                continue
            kind = rng.choice(FAULTS)
            run.faults[kind] += 1
            await inject(gateway, traffic, kind, rng)
        gateway.accept_handshakes()
        for traffic in traffics:
            if traffic.session_id in gateway.sessions:
                gateway.resume_acking(traffic.session_id)
        stuck = 0
        for traffic in traffics:
            if traffic.client.outcome is None:
                try:
                    await traffic.run_for(3, timeout=10)
                except asyncio.TimeoutError as exc:
                    stuck += 1
                    print(f"STUCK: {exc}", flush=True)
            run.tallies.append(await traffic.stop(timeout=20))
            run.resumes += traffic.client.stats.resumes
            run.reconnects += traffic.client.stats.reconnects
            await traffic.client.close()
    gc.collect()
    await asyncio.sleep(0.2)  # let closed transports finish their callbacks
    leaked_tasks = len(asyncio.all_tasks()) - baseline_tasks
    leaked_fds = open_fds() - baseline_fds
    rss_growth = (rss_kib() - (rss_after_warmup or rss_kib())) / 1024
    total = {
        name: sum(getattr(tally, name) for tally in run.tallies)
        for name in ("client_sent", "server_received", "server_sent", "client_received",
                     "lost", "duplicated", "out_of_order", "invalidated")
    }  # fmt: skip
    print(
        f"faults injected: {sum(run.faults.values())} "
        + ", ".join(f"{k} {v}" for k, v in run.faults.items())
    )
    print(f"sessions: {sessions} live, {run.stopped} stopped by a final code and replaced; "
          f"resumes {run.resumes}, new sessions {run.reconnects}")  # fmt: skip
    print(f"client -> server: {total['client_sent']} sent, {total['server_received']} received")
    print(f"server -> client: {total['server_sent']} sent, {total['client_received']} received, "
          f"{total['invalidated']} in sessions the server invalidated (no replay)")  # fmt: skip
    lost, duplicated, disorder = total["lost"], total["duplicated"], total["out_of_order"]
    print(f"lost {lost}, duplicated {duplicated}, out of order {disorder}")
    print(f"leaked tasks {leaked_tasks}, leaked fds {leaked_fds}, RSS growth {rss_growth:.1f} MB")
    print(f"errors nobody retrieved {len(unhandled)}")
    ok = (
        stuck == 0
        and not unhandled
        and total["lost"] == 0
        and total["duplicated"] == 0
        and total["out_of_order"] == 0
        and leaked_tasks == 0
        and leaked_fds <= 0
        and rss_growth < 5
    )
    print(f"{'PASS' if ok else 'FAIL'} (seed {seed})")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description="wavegate chaos soak")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of faults")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    # The malformed frames are injected on purpose (and counted): no warning per frame.
    logging.getLogger("wavegate").setLevel(logging.ERROR)
    print(f"chaos soak: seed {seed}, {args.sessions} sessions, {args.duration:.0f}s", flush=True)
    started = time.monotonic()
    status = asyncio.run(
        asyncio.wait_for(soak(args.duration, args.sessions, seed), args.duration + 120)
    )
    print(f"done in {time.monotonic() - started:.0f}s")
    sys.exit(status)


if __name__ == "__main__":
    main()
