"""How long DAVE takes to become active, on loopback against the fake voice gateway.

For groups of 2, 3 and 5 members joining one channel at once: per member, the time
from its READY (SESSION_DESCRIPTION handled, key package sent) to its DAVE_READY (MLS
group active); per group, from the first ``start()`` to the last member active. Then
the cost of a join into a settled group of 4: from the joiner's ``start()`` until every
member is active at the new epoch. Gateway and clients share one process (the
gateway's MLS signing is counted), so these are upper bounds for the client's part.

    python -m benchmarks.dave [--rounds N] [--sizes 2,3,5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from wavegate import Backoff, SessionEvent
from wavegate.discord.voice import DaveEvent, VoiceClient, VoiceCredentials
from wavegate.session import EventKind
from wavegate.testing.voice import FakeVoiceGateway

PATIENCE = 30.0


class Group:
    """Members of one channel, with the time each became READY and DAVE-active."""

    def __init__(self, gateway: FakeVoiceGateway, server: int) -> None:
        self.gateway = gateway
        self.server = str(server)
        self.clients: list[VoiceClient] = []
        self.ready: dict[int, float] = {}
        self.active: dict[int, float] = {}
        self.changed = asyncio.Event()

    def _watch(self, user: int) -> Any:
        def seen(event: SessionEvent) -> None:
            if event.kind is EventKind.READY:
                self.ready.setdefault(user, event.at)
            elif event.kind in (DaveEvent.READY, DaveEvent.EPOCH):
                self.active[user] = event.at
            self.changed.set()

        return seen

    async def join(self, user: int) -> None:
        credentials = VoiceCredentials(
            self.server, str(user), f"s-{user}", f"token-{user}", self.server
        )
        client = VoiceClient(
            self.gateway.url,
            credentials,
            backoff=Backoff(base=0.01, cap=0.1, max_attempts=5),
            on_event=self._watch(user),
        )
        self.clients.append(client)
        await client.start()

    def settled(self) -> bool:
        channel = self.gateway.dave_channel(self.server)
        return len(channel.members) == len(self.clients) and all(
            c.dave_state.active and c.dave_state.epoch == channel.epoch for c in self.clients
        )

    async def settle(self) -> None:
        deadline = time.monotonic() + PATIENCE
        while not self.settled():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


async def form(gateway: FakeVoiceGateway, server: int, size: int) -> tuple[list[float], float]:
    """``size`` members join at once: (each member's READY -> active, group time)."""
    group = Group(gateway, server)
    started = time.monotonic()
    try:
        await asyncio.gather(*(group.join(server * 1000 + i) for i in range(size)))
        await group.settle()
        finished = max(group.active.values())
        return [group.active[u] - group.ready[u] for u in group.ready], finished - started
    finally:
        await group.close()


async def rekey_on_join(gateway: FakeVoiceGateway, server: int) -> float:
    """A fifth member joins a settled group of four: seconds until all are active
    at the new epoch."""
    group = Group(gateway, server)
    try:
        for i in range(4):
            await group.join(server * 1000 + i)
        await group.settle()
        started = time.monotonic()
        await group.join(server * 1000 + 4)
        await group.settle()
        return time.monotonic() - started
    finally:
        await group.close()


def summary(values: list[float]) -> dict[str, float]:
    """Median, 90th percentile and max, in milliseconds."""
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p90_ms": round(p90 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "samples": len(ordered),
    }


async def measure(rounds: int, sizes: list[int]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    server = 10
    async with FakeVoiceGateway(heartbeat_interval=5.0) as gateway:
        for size in sizes:
            members: list[float] = []
            groups: list[float] = []
            for _ in range(rounds):
                server += 1
                each, whole = await form(gateway, server, size)
                members += each
                groups.append(whole)
            results[f"{size} members"] = {
                "member READY -> active": summary(members),
                "first start -> all active": summary(groups),
            }
        joins = []
        for _ in range(rounds):
            server += 1
            joins.append(await rekey_on_join(gateway, server))
        results["5th joins 4"] = {"start -> all active at new epoch": summary(joins)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sizes", default="2,3,5")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not all(1 < size < 1000 for size in sizes) or args.rounds < 1:
        parser.error("sizes are from 2 to 999 members (user ids are 1000 per group), rounds >= 1")
    results = asyncio.run(measure(args.rounds, sizes))
    for case, metrics in results.items():
        for metric, value in metrics.items():
            print(
                f"{case:>11}  {metric:<34} median {value['median_ms']:6.1f} ms  "
                f"p90 {value['p90_ms']:6.1f} ms  max {value['max_ms']:6.1f} ms  "
                f"(n={value['samples']})"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
