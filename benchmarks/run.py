"""The benchmark suite (``make bench``): wavegate against its peers, in one run.

Every client runs in its own process against a load server in another process, in a
rotating order, several rounds; results are medians with min/max, and every figure is
also a ratio to hikari-wave and to the fastest raw client of the same run (the machines
are shared and noisy, so only same-run ratios mean anything).

    python -m benchmarks.run [--quick] [--rounds N] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STREAM_CLIENTS = [
    "wavegate-aiohttp",
    "wavegate-picows",
    "wavegate-picows-python",
    "hikari-wave",
    "websockets",
    "aiohttp",
    "picows-recv",
    "picows-callback",
    "raw-socket",
]
RAW = ("websockets", "aiohttp", "picows-recv", "picows-callback")
WORKLOADS = {
    "A": ("200 B JSON text frames", "text", 200, 200_000),
    "B": ("1 KiB binary frames", "binary", 1024, 200_000),
    "C": ("64 KiB binary frames, warm", "binary", 65536, 4_000),
}
WARM = {"C"}
"""Workloads each client runs twice per process, timing the second run."""


@dataclass
class Series:
    """Repeated measurements of one client on one workload."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def describe(self, unit: str = "") -> str:
        return f"{self.median:,.0f}{unit} ({min(self.values):,.0f}-{max(self.values):,.0f})"


def run_client(client: str, mode: str, url: str, count: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.clients", client, mode, url, str(count)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{client} {mode} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def start_server() -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen(
        [sys.executable, "-m", "wavegate.testing.loadserver"], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    port = int(server.stdout.readline().split()[1])
    return server, port


def rotate(clients: list[str], round_number: int) -> list[str]:
    shift = round_number % len(clients)
    return clients[shift:] + clients[:shift]


def throughput(port: int, rounds: int, scale: float) -> dict[str, dict[str, Series]]:
    results: dict[str, dict[str, Series]] = {}
    for name, (_, kind, size, count) in WORKLOADS.items():
        count = max(1000, int(count * scale))
        url = f"ws://127.0.0.1:{port}/stream?kind={kind}&size={size}&count={count}"
        run_client("raw-socket", "stream", url, count)  # warm-up: the server builds its frames
        series = results[name] = {client: Series() for client in STREAM_CLIENTS}
        mode = "stream-warm" if name in WARM else "stream"
        for round_number in range(rounds):
            for client in rotate(STREAM_CLIENTS, round_number):
                series[client].values.append(run_client(client, mode, url, count)["rate"])
        print(
            f"  {name}: " + ", ".join(f"{c} {s.median:,.0f}" for c, s in series.items()), flush=True
        )
        print(f"     {versus_raw(series)}", flush=True)
    return results


def versus_raw(series: dict[str, Series], higher_is_better: bool = True) -> str:
    """Each wavegate client's ratio to the best raw client and to raw picows recv()."""
    pick = max if higher_is_better else min
    best = pick(RAW, key=lambda client: series[client].median)
    reference, picows = series[best].median, series["picows-recv"].median
    return "; ".join(
        f"{client}: {ratio(series[client].median, reference, higher_is_better)} best raw "
        f"({best}), {ratio(series[client].median, picows, higher_is_better)} picows-recv"
        for client in series
        if client.startswith("wavegate")
    )


def latency(port: int, rounds: int, scale: float) -> dict[str, dict[str, Series]]:
    clients = [client for client in STREAM_CLIENTS if client != "raw-socket"]
    p50 = {client: Series() for client in clients}
    p99 = {client: Series() for client in clients}
    count = max(500, int(5000 * scale))
    for round_number in range(rounds):
        for client in rotate(clients, round_number):
            samples = sorted(
                run_client(client, "echo", f"ws://127.0.0.1:{port}/echo", count)["latencies"]
            )
            p50[client].values.append(samples[len(samples) // 2] * 1e6)
            p99[client].values.append(samples[int(len(samples) * 0.99)] * 1e6)
    print("  D p50 µs: " + ", ".join(f"{c} {s.median:.1f}" for c, s in p50.items()), flush=True)
    print(f"     {versus_raw(p50, higher_is_better=False)}", flush=True)
    return {"p50": p50, "p99": p99}


def memory(port: int, connections: int) -> dict[str, float]:
    clients = [
        "wavegate-aiohttp",
        "wavegate-picows",
        "hikari-wave",
        "websockets",
        "aiohttp",
        "picows-callback",
    ]
    result = {
        client: run_client(client, "idle", f"ws://127.0.0.1:{port}/idle", connections)[
            "bytes_per_connection"
        ]
        for client in clients
    }
    print(
        "  E KiB/conn: " + ", ".join(f"{c} {v / 1024:.1f}" for c, v in result.items()), flush=True
    )
    return result


async def _recovery_once(transport: str, fault: str) -> float:
    from wavegate import Websocket
    from wavegate.discord.voice import VoiceClient, VoiceCredentials
    from wavegate.session import EventKind, SessionEvent
    from wavegate.testing.voice import FakeVoiceGateway

    resumed = asyncio.Event()
    stamp: list[float] = []

    def on_event(event: SessionEvent) -> None:
        if event.kind is EventKind.RESUMED:
            stamp.append(time.perf_counter())
            resumed.set()

    credentials = VoiceCredentials("1", "2", "s", "t", "1")
    async with FakeVoiceGateway(heartbeat_interval=1.0) as gateway:
        client = VoiceClient(
            gateway.url, credentials, websocket=Websocket(transport=transport), on_event=on_event
        )
        await client.start()
        await client.wait_ready(5)
        await gateway.wait_live("s")
        started = time.perf_counter()
        if fault == "4015":
            await gateway.close_session("s", 4015, "crashed")
        else:
            await gateway.drop("s")
        await asyncio.wait_for(resumed.wait(), 5)
        await client.close()
    return stamp[0] - started


def recovery(rounds: int) -> dict[str, Series]:
    results: dict[str, Series] = {}
    for transport in ("aiohttp", "picows"):
        for fault in ("4015", "tcp-drop"):
            series = results[f"wavegate-{transport} {fault}"] = Series()
            for _ in range(rounds):
                series.values.append(asyncio.run(_recovery_once(transport, fault)) * 1000)
    print("  F ms: " + ", ".join(f"{c} {s.median:.2f}" for c, s in results.items()), flush=True)
    return results


def versions() -> dict[str, str]:
    found = {}
    for name in ("wavegate", "hikari-wave", "websockets", "aiohttp", "picows", "orjson"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    return found


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, {system}, CPython {platform.python_version()}"


def ratio(value: float, reference: float, higher_is_better: bool = True) -> str:
    if not reference:
        return "-"
    return f"{value / reference:.2f}x" if higher_is_better else f"{reference / value:.2f}x"


def report(data: dict[str, Any], out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Benchmark results",
        "",
        f"Command: `{command}`. Machine: {data['machine']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in data["versions"].items())
        + f". Rounds: {data['rounds']}; values are medians (min-max).",
        "",
        "Ratios: **vs hikari** = against hikari-wave 0.7.0a1's `Websocket`; **vs best raw** =",
        "against the fastest raw client of the same run (websockets, aiohttp, picows recv or",
        "picows callbacks). Throughput clients receive one message per `await` and decode JSON",
        "text frames with orjson; `raw-socket` reads the same bytes from a blocking socket",
        "(the limit: no parsing).",
        "",
    ]
    for name, series in data["throughput"].items():
        title = WORKLOADS[name][0]
        hikari = series["hikari-wave"].median
        best = max(series[client].median for client in RAW)
        picows = series["picows-recv"].median
        lines += [
            f"## {name}: {title} (messages/s)",
            "",
            "| client | msg/s | vs hikari | vs best raw | vs picows recv |",
            "|---|---|---|---|---|",
        ]
        for client, values in series.items():
            versus = (
                f"{ratio(values.median, hikari)} | {ratio(values.median, best)} | "
                f"{ratio(values.median, picows)}"
            )
            lines.append(f"| {client} | {values.describe()} | {versus} |")
        lines.append("")
    p50, p99 = data["latency"]["p50"], data["latency"]["p99"]
    hikari, best = p50["hikari-wave"].median, min(p50[client].median for client in RAW)
    picows = p50["picows-recv"].median
    lines += [
        "## D: round trip of a small JSON message (µs, lower is better)",
        "",
        "Ratios here are speed ratios: above 1.00x is faster than the reference.",
        "",
        "| client | p50 (min-max) | p99 | p50 vs hikari | p50 vs best raw | p50 vs picows recv |",
        "|---|---|---|---|---|---|",
    ]
    for client in p50:
        lines.append(
            f"| {client} | {p50[client].describe()} | {p99[client].median:.1f} | "
            f"{ratio(p50[client].median, hikari, False)} | "
            f"{ratio(p50[client].median, best, False)} | "
            f"{ratio(p50[client].median, picows, False)} |"
        )
    lines += ["", f"## E: idle memory per connection ({data['connections']} connections, KiB)", ""]
    lines += ["| client | KiB per connection |", "|---|---|"]
    for client, value in data["memory"].items():
        lines.append(f"| {client} | {value / 1024:.1f} |")
    lines += ["", "## F: time to recover on the fake voice gateway (ms, close/drop -> RESUMED)", ""]
    lines += ["| case | median (min-max) |", "|---|---|"]
    for case, series in data["recovery"].items():
        lines.append(
            f"| {case} | {series.median:.2f} ({min(series.values):.2f}-{max(series.values):.2f}) |"
        )
    lines += ["", "![throughput](throughput.png)", "", "![latency](latency.png)", ""]
    (out / "results.md").write_text("\n".join(lines))
    plot(data, out)


def plot(data: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    def thousands(value: float, _: object) -> str:
        return f"{value / 1000:,.0f}k"

    def bars(axis: Any, values: dict[str, float], fmt: str) -> None:
        clients = list(values)
        colours = [
            "tab:green" if client.startswith("wavegate") else "tab:grey" for client in clients
        ]
        axis.barh(clients, [values[c] for c in clients], color=colours)
        for index, client in enumerate(clients):
            axis.text(
                values[client], index, " " + fmt.format(values[client]), va="center", fontsize=8
            )
        axis.invert_yaxis()
        axis.margins(x=0.25)

    fig, axes = plt.subplots(1, len(data["throughput"]), figsize=(16, 4.8))
    for axis, (name, series) in zip(axes, data["throughput"].items(), strict=True):
        medians = {client: s.median for client, s in series.items() if client != "raw-socket"}
        bars(axis, medians, "{:,.0f}")
        limit = series["raw-socket"].median
        axis.set_title(f"{name}: {WORKLOADS[name][0]}\n(plain socket, no parsing: {limit:,.0f}/s)")
        axis.xaxis.set_major_formatter(FuncFormatter(thousands))
        axis.set_xlabel("messages/s (higher is better)")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    fig, axis = plt.subplots(figsize=(8, 4))
    bars(axis, {client: s.median for client, s in data["latency"]["p50"].items()}, "{:.1f} µs")
    axis.set_title("D: small JSON round trip, p50 (µs, lower is better)")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)


def replot(out: Path) -> None:
    """Redraw the plots from ``results.json`` (no measuring)."""
    raw = json.loads((out / "results.json").read_text())
    data = {
        "throughput": {
            w: {c: Series(v) for c, v in s.items()} for w, s in raw["throughput"].items()
        },
        "latency": {p: {c: Series(v) for c, v in s.items()} for p, s in raw["latency"].items()},
    }
    plot(data, out)


def main() -> None:
    parser = argparse.ArgumentParser(description="wavegate benchmarks")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    parser.add_argument("--replot", action="store_true", help="redraw plots from results.json")
    args = parser.parse_args()
    if args.replot:
        replot(Path(args.out))
        return
    rounds = 2 if args.quick else args.rounds
    scale = 0.25 if args.quick else 1.0
    started = time.monotonic()
    server, port = start_server()
    try:
        print("throughput (A, B, C)...", flush=True)
        data: dict[str, Any] = {"throughput": throughput(port, rounds, scale)}
        print("latency (D)...", flush=True)
        data["latency"] = latency(port, rounds, scale)
        print("idle memory (E)...", flush=True)
        data["memory"] = memory(port, 200 if args.quick else args.connections)
    finally:
        server.terminate()
        server.wait(10)
    print("recovery (F)...", flush=True)
    data["recovery"] = recovery(5 if args.quick else 21)
    data.update(
        versions=versions(),
        machine=machine(),
        rounds=rounds,
        connections=200 if args.quick else args.connections,
    )
    command = "make bench" + (" (quick)" if args.quick else "")
    report(data, Path(args.out), command)
    raw = {
        key: {k: (v.values if isinstance(v, Series) else v) for k, v in value.items()}
        if isinstance(value, dict)
        else value
        for key, value in data.items()
        if key not in ("latency", "throughput")
    }
    raw["throughput"] = {
        w: {c: s.values for c, s in series.items()} for w, series in data["throughput"].items()
    }
    raw["latency"] = {
        p: {c: s.values for c, s in series.items()} for p, series in data["latency"].items()
    }
    (Path(args.out) / "results.json").write_text(json.dumps(raw, indent=1))
    print(f"done in {time.monotonic() - started:.0f}s -> {args.out}/results.md", flush=True)


if __name__ == "__main__":
    main()
