"""Workload G: many concurrent ``VoiceClient`` sessions in one process, against
``wavegate serve`` in another (``make bench-scale``).

For each session count: start ``wavegate serve --heartbeat 5``, start a client process
that opens that many sessions (each in its own voice server and channel, with UDP IP
discovery and DAVE negotiated as usual), wait until every one is READY, read the
client's RSS from outside (``/proc``), then keep them all for ``--seconds`` and count
heartbeat round trips, zombies and reconnects. Memory per session is the RSS growth
from the moment the client had imported everything to the moment all were READY,
divided by the count.

    python -m benchmarks.scale [--sessions 1000 2000 5000] [--seconds 60] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OPENING = 100
"""Sessions opened at once while ramping up."""
HEARTBEAT = 5.0
"""The fake gateway's heartbeat interval, in seconds."""


def rss_of(pid: int) -> int:
    """A process's resident memory in bytes, read from outside."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _raise_fd_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- the client process ------------------------------------------------------------------


def _websocket(variant: str) -> Any:
    """The session's websocket for a variant (``None``: the VoiceClient's default, which
    the ``tls`` variant uses too, with the server's authority among the system's)."""
    from wavegate import Websocket

    if variant == "aiohttp":
        return Websocket(transport="aiohttp")
    return None


def _trust_as_the_systems(authority: str) -> None:
    """Make ``ssl=True`` (the default) trust ``authority`` besides the system's CAs, as
    a user's trusts Discord's: the default context loads the whole store."""
    bundle = Path(authority).with_name("trusted.pem")
    system = ssl.get_default_verify_paths().cafile
    bundle.write_bytes(
        (Path(system).read_bytes() if system else b"") + Path(authority).read_bytes()
    )
    os.environ["SSL_CERT_FILE"] = str(bundle)


async def _clients(url: str, count: int, seconds: float, variant: str) -> None:
    from wavegate.discord import VoiceClient, VoiceCredentials
    from wavegate.session import EventKind, SessionEvent, SessionState

    latencies: list[float] = []

    def on_event(event: SessionEvent) -> None:
        if event.kind is EventKind.HEARTBEAT and event.latency is not None:
            latencies.append(event.latency)

    gc.collect()
    tracked_before = len(gc.get_objects())
    print("baseline", flush=True)
    sys.stdin.readline()  # the parent has read the baseline RSS
    clients = []
    opening = asyncio.Semaphore(OPENING)

    async def open_one(n: int) -> None:
        server = str(10_000_000 + n)
        credentials = VoiceCredentials(server, str(n + 1), f"s{n}", f"t{n}", server)
        client = VoiceClient(
            url,
            credentials,
            on_event=on_event,
            max_dave_protocol_version=0 if variant == "no-dave" else 1,
            websocket=_websocket(variant),
        )
        clients.append(client)
        async with opening:
            await client.start()
            await client.wait_ready(120)

    started = time.monotonic()
    await asyncio.gather(*(open_one(n) for n in range(count)))
    ramp = time.monotonic() - started
    gc.collect()
    # What a full collection costs with every session up: the loop stands still for it.
    collecting = time.perf_counter()
    gc.collect()
    full_collect = time.perf_counter() - collecting
    tracked = (len(gc.get_objects()) - tracked_before) / count
    if variant == "freeze":
        gc.freeze()  # the sessions' objects out of the collector's reach (the app's call)
    print("ready", flush=True)
    # The parent reads the RSS with every session READY; the loop keeps serving meanwhile.
    await asyncio.to_thread(sys.stdin.readline)
    # Beats in flight during the collection above waited for it: one interval to settle,
    # then the measurement, sessions living on their own.
    await asyncio.sleep(HEARTBEAT)
    latencies.clear()
    collections = [0, 0, 0]  # by generation, in the window: full ones stop the loop longest

    def count_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections[info["generation"]] += 1

    gc.callbacks.append(count_collection)
    try:
        await asyncio.sleep(seconds)
    finally:
        gc.callbacks.remove(count_collection)
    ready = sum(1 for client in clients if client.state is SessionState.READY)
    stats = [client.stats for client in clients]
    result = {
        "ramp_seconds": ramp,
        "tracked_per_session": tracked,
        "full_collect_ms": full_collect * 1000,
        "collections": collections,
        "ready": ready,
        "zombies": sum(s.zombies for s in stats),
        "reconnects": sum(s.connects - 1 for s in stats),
        "heartbeats": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000 if latencies else None,
        "p99_ms": sorted(latencies)[int(len(latencies) * 0.99)] * 1000 if latencies else None,
    }
    print(json.dumps(result), flush=True)
    await asyncio.gather(*(client.close() for client in clients))


def client_main(
    url: str, count: int, seconds: float, variant: str, authority: str | None = None
) -> None:
    _raise_fd_limit()
    if authority is not None:
        _trust_as_the_systems(authority)
    asyncio.run(_clients(url, count, seconds, variant))


# -- the parent ---------------------------------------------------------------------------


def _serve(authority: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    """The fake gateway in its own process (over TLS when given where to write its
    certificate authority); its URL."""
    tls = [] if authority is None else [str(authority)]
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.scale", "serve", *tls],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # one log line per connection
        text=True,
        cwd=ROOT,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    return server, line.rsplit(" ", 1)[-1].strip()


def serve_main(authority: str | None = None) -> None:
    """``wavegate serve --heartbeat 5`` on any free port, with the fd limit raised;
    ``--tls``, writing its authority to ``authority``, when given."""
    _raise_fd_limit()
    from wavegate.cli import main

    sys.argv = [
        "wavegate",
        "serve",
        "--port",
        "0",
        "--heartbeat",
        str(int(HEARTBEAT)),
        "--dave-optional",
        *([] if authority is None else ["--tls", "--ca-out", authority]),
    ]
    main()


def measure(count: int, seconds: float, variant: str = "default") -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        authority = Path(scratch) / "authority.pem" if variant == "tls" else None
        return _measure(count, seconds, variant, authority)


def _measure(count: int, seconds: float, variant: str, authority: Path | None) -> dict[str, Any]:
    server, url = _serve(authority)
    tls = [] if authority is None else [str(authority)]
    client = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.scale",
            "client",
            url,
            str(count),
            str(seconds),
            variant,
            *tls,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert client.stdin is not None
    assert client.stdout is not None
    assert client.stderr is not None
    try:
        assert client.stdout.readline().strip() == "baseline"
        baseline = rss_of(client.pid)
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "ready", "the sessions did not all start"
        loaded = rss_of(client.pid)
        client.stdin.write("\n")
        client.stdin.flush()
        line = client.stdout.readline()
        if not line:
            client.wait(30)
            raise RuntimeError(f"the client failed:\n{client.stderr.read()[-3000:]}")
        result: dict[str, Any] = json.loads(line)
        client.wait(120)
    finally:
        client.kill()
        server.terminate()
        server.wait(30)
    result.update(
        sessions=count, variant=variant, kib_per_session=(loaded - baseline) / count / 1024
    )
    return result


def plot(results: list[dict[str, Any]], out: Path) -> None:
    """Memory per session and heartbeat p99 against the session count (scale.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [result["sessions"] for result in results]
    figure, (memory, latency) = plt.subplots(1, 2, figsize=(10, 3.6))
    memory.plot(counts, [r["kib_per_session"] for r in results], marker="o")
    memory.axhline(24, color="grey", linestyle="--", label="aim: 24 KiB")
    memory.set(xlabel="sessions", ylabel="KiB per session", title="client memory per session")
    latency.plot(counts, [r["p99_ms"] for r in results], marker="o", label="p99")
    latency.plot(counts, [r["p50_ms"] for r in results], marker="o", label="p50")
    latency.axhline(50, color="grey", linestyle="--", label="aim: p99 50 ms")
    latency.set(xlabel="sessions", ylabel="ms", title="heartbeat round trip")
    for axis in (memory, latency):
        axis.set_ylim(bottom=0)
        axis.legend()
    figure.tight_layout()
    figure.savefig(out / "scale.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description="workload G: many VoiceClient sessions")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1000, 2000, 5000])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--out", type=Path, default=None, help="write scale.json (and scale.png) here"
    )
    parser.add_argument("--replot", action="store_true", help="redraw scale.png from scale.json")
    parser.add_argument(
        "--variant",
        choices=["default", "no-dave", "aiohttp", "tls", "freeze"],
        default="default",
        help="default: picows, DAVE offered; no-dave: DAVE not offered; aiohttp: that "
        "transport; tls: wss:// (as Discord serves it); freeze: gc.freeze() once all "
        "sessions are READY",
    )
    args = parser.parse_args()
    if args.replot:
        assert args.out is not None, "--replot needs --out"
        plot(json.loads((args.out / "scale.json").read_text()), args.out)
        return
    results = []
    for count in args.sessions:
        result = measure(count, args.seconds, args.variant)
        print(
            f"  G {count} sessions: {result['ready']} READY, {result['zombies']} zombies, "
            f"{result['reconnects']} reconnects, heartbeat p50 {result['p50_ms']:.1f} ms "
            f"p99 {result['p99_ms']:.1f} ms ({result['heartbeats']} beats), "
            f"{result['kib_per_session']:.1f} KiB/session, "
            f"{result['tracked_per_session']:.0f} GC-tracked objects/session, "
            f"a full collection {result['full_collect_ms']:.0f} ms, "
            f"collections in the window (by generation) {result['collections']}, "
            f"ramp {result['ramp_seconds']:.1f} s",
            flush=True,
        )
        results.append(result)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.json").write_text(json.dumps(results, indent=1))
        try:
            plot(results, args.out)
        except ImportError:  # matplotlib is in the benchmark venv only
            print("  (no matplotlib: scale.png not drawn; see --replot)", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        client_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), *sys.argv[5:7])
    elif sys.argv[1:2] == ["serve"]:
        serve_main(*sys.argv[2:3])
    else:
        main()
