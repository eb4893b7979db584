"""``wavegate demo``: a voice client rides out a scripted fault storm on the fake gateway.

While the client and the gateway exchange numbered messages both ways, the gateway
crashes (4015), drops TCP, goes silent on heartbeats (zombie), expires its replay
buffer, invalidates the session (4006) and finally kicks the client (4014). The
timeline shows each event as it happens; the tally proves nothing was lost.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import TextIO

from .backoff import Backoff
from .discord.voice import VoiceClient, VoiceCredentials
from .session import EventKind, Outcome, SessionEvent
from .signals import SessionClosedError, Signal
from .testing import WebsocketTestServer
from .testing.traffic import Tally, Traffic
from .testing.voice import FakeVoiceGateway
from .websocket import Websocket

try:
    from rich.console import Console
    from rich.table import Table
except ImportError:  # pragma: no cover - rich is a declared dependency of the CLI
    Console = None  # type: ignore[assignment,misc]

_STYLE: dict[Enum, str] = {
    EventKind.READY: "bold green",
    EventKind.RESUMED: "bold green",
    EventKind.CONNECTION_LOST: "bold red",
    EventKind.ZOMBIE: "bold magenta",
    EventKind.RESUME_SCHEDULED: "yellow",
    EventKind.RECONNECT_SCHEDULED: "yellow",
    EventKind.STOPPED: "bold cyan",
}


_PATIENCE = 30.0
"""Seconds any step of the storm may take before the demo gives up (a busy machine)."""


@dataclass
class _Fault:
    title: str
    expect: str
    inject: Callable[[], Awaitable[None]]
    recovered_by: EventKind | None
    """The event that ends the recovery (``None``: nothing to recover from)."""


class _Printer:
    """Writes the timeline: rich markup on a terminal, plain text otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.console = None
        self.soft_wrap = False
        """Off a terminal (a file, a pipe), a line is never broken: grep must find it."""
        if Console is not None:
            self.console = Console(file=out, highlight=False)
            if not self.console.is_terminal:  # tables as wide as their rows need
                self.console = Console(file=out, highlight=False, width=120)
                self.soft_wrap = True
        self.started = time.monotonic()

    def line(self, text: str, style: str = "") -> None:
        stamp = f"{time.monotonic() - self.started:7.3f}s"
        if self.console is not None:
            self.console.print(
                f"[dim]{stamp}[/dim]  {text}", style=style or None, soft_wrap=self.soft_wrap
            )
        else:
            print(f"{stamp}  {text}", file=self.out, flush=True)

    def event(self, event: SessionEvent) -> None:
        if event.kind is EventKind.HEARTBEAT:
            return
        text = event.kind.value
        if event.signal is not None and event.kind in (
            EventKind.CONNECTION_LOST,
            EventKind.STOPPED,
        ):
            text += f"  {type(event.signal).__name__}: {event.signal}"
        if event.delay is not None and event.kind is not EventKind.STOPPED:
            text += f"  (attempt {event.attempt}, in {event.delay * 1000:.0f} ms)"
        if event.detail and event.kind is not EventKind.STOPPED:
            text += f"  {event.detail}"
        self.line(f"  client: {text}", _STYLE.get(event.kind, ""))


class _Watch:
    """Prints the client's events and tells when the one a fault awaits came."""

    def __init__(self, printer: _Printer) -> None:
        self.printer = printer
        self.awaited: EventKind | None = None
        self.recovered = asyncio.Event()

    def on_event(self, event: SessionEvent) -> None:
        self.printer.event(event)
        if event.kind is self.awaited:
            self.recovered.set()

    async def fault(self, fault: _Fault) -> float | None:
        """Inject ``fault``; seconds until it was recovered from (``None``: nothing to)."""
        self.printer.line(f"FAULT {fault.title}  (expect: {fault.expect})", "bold reverse")
        self.awaited = fault.recovered_by
        self.recovered.clear()
        started = time.monotonic()
        await fault.inject()
        if fault.recovered_by is None:
            return None
        await asyncio.wait_for(self.recovered.wait(), _PATIENCE)
        return time.monotonic() - started


def _faults(gateway: FakeVoiceGateway, sid: str, traffic: Traffic) -> list[_Fault]:
    resumed, ready = EventKind.RESUMED, EventKind.READY
    return [
        _Fault("server crash: close 4015, 20 messages sent while down", "resume + replay",
               lambda: _crash_with_backlog(gateway, sid, traffic), resumed),
        _Fault("TCP drop, no close frame", "resume", lambda: gateway.drop(sid), resumed),
        _Fault("zombie: server stops ACKing heartbeats", "resume",
               _sync(lambda: gateway.stop_acking(sid)), resumed),
        _Fault("replay buffer expired, then 4015", "resume refused -> new session",
               lambda: _expire_and_crash(gateway, sid), ready),
        _Fault("session invalidated: close 4006", "new session",
               lambda: gateway.close_session(sid, 4006, "session no longer valid"), ready),
        _Fault("unknown ops 15/18/20 from the server", "ignored",
               lambda: _unknown_ops(gateway, sid), None),
    ]  # fmt: skip


async def storm(out: TextIO) -> int:
    """Run the fault storm; 0 if nothing was lost and every fault ended as expected."""
    printer = _Printer(out)
    watch = _Watch(printer)
    credentials = VoiceCredentials("42", "7", "voice-session-id", "voice-token", "42")
    # The gateway tolerates 1 s without heartbeats (not 300 ms): on a busy machine it
    # would otherwise add 4009 closes of its own to the scripted faults.
    async with FakeVoiceGateway(heartbeat_interval=0.1, heartbeat_timeout_factor=10) as gateway:
        printer.line(f"fake voice gateway v8 on {gateway.url} (heartbeat 100 ms)", "bold")
        client = VoiceClient(
            gateway.url,
            credentials,
            # The storm compresses time: 0.1 s between faults stands for minutes of health.
            backoff=Backoff(base=0.05, cap=0.5, max_attempts=20, reset_after=0.1),
            websocket=Websocket(open_timeout=2, close_timeout=1),
            on_event=watch.on_event,
            refresh_credentials=_fresh_token(gateway, credentials, printer),
        )
        traffic = Traffic(gateway, client, period=0.003)
        faults = _faults(gateway, credentials.session_id, traffic)
        try:
            recoveries, outcome = await _run_storm(watch, gateway, client, traffic, faults)
        except (asyncio.TimeoutError, SessionClosedError) as exc:
            # Not a crash to show with a traceback: a step that never happened.
            printer.line(
                f"FAIL: the storm stalled ({exc or type(exc).__name__}); "
                f"client state {client.state.value}, outcome {client.outcome}",
                "bold red",
            )
            await client.close(4000)
            await traffic.stop()
            return 1
        tally = await traffic.stop()
        replayed = gateway.replayed
    ok = tally.perfect and outcome.reason == "disconnect" and outcome.code == 4014
    _report(printer, tally, client, recoveries, outcome_text=str(outcome), replayed=replayed, ok=ok)
    return 0 if ok else 1


def _fresh_token(
    gateway: FakeVoiceGateway, credentials: VoiceCredentials, printer: _Printer
) -> Callable[[], Awaitable[VoiceCredentials]]:
    """What a bot does for a new voice session: op 4 on the main gateway again, and
    the token of the VOICE_SERVER_UPDATE that follows (here, from the fake)."""

    async def refresh() -> VoiceCredentials:
        printer.line("  client: new session: a fresh token (VOICE_SERVER_UPDATE)", "yellow")
        return replace(credentials, token=gateway.fresh_token(credentials.user_id))

    return refresh


async def _run_storm(
    watch: _Watch,
    gateway: FakeVoiceGateway,
    client: VoiceClient,
    traffic: Traffic,
    faults: list[_Fault],
) -> tuple[list[tuple[str, str, float | None]], Outcome]:
    await client.start()
    await client.wait_ready(_PATIENCE)
    traffic.start()
    await traffic.run_for(30)
    recoveries = []
    for fault in faults:
        recoveries.append((fault.title, fault.expect, await watch.fault(fault)))
        await traffic.run_for(40)
    watch.printer.line("FAULT kicked: close 4014  (expect: stop)", "bold reverse")
    await gateway.close_session(client.protocol.credentials.session_id, 4014, "disconnected")
    return recoveries, await asyncio.wait_for(client.wait_closed(), _PATIENCE)


async def _crash_with_backlog(gateway: FakeVoiceGateway, session_id: str, traffic: Traffic) -> None:
    await gateway.close_session(session_id, 4015, "crashed")
    await traffic.server_burst(20)


def _sync(action: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        action()

    return run


async def _expire_and_crash(gateway: FakeVoiceGateway, session_id: str) -> None:
    gateway.expire(session_id)
    await gateway.close_session(session_id, 4015, "crashed")


async def _unknown_ops(gateway: FakeVoiceGateway, session_id: str) -> None:
    for op in (15, 18, 20):
        await gateway.send_unknown(session_id, op)


def _report(
    printer: _Printer,
    tally: Tally,
    client: VoiceClient,
    recoveries: list[tuple[str, str, float | None]],
    *,
    outcome_text: str,
    replayed: int,
    ok: bool,
) -> None:
    stats = client.stats
    rows = [
        ("client -> server", f"{tally.client_sent} sent", f"{tally.server_received} received"),
        ("server -> client", f"{tally.server_sent} sent", f"{tally.client_received} received"),
        ("replayed after resume", str(replayed), ""),
        (
            "lost / duplicated / out of order",
            f"{tally.lost} / {tally.duplicated} / {tally.out_of_order}",
            "",
        ),
        (
            "resumes / new sessions / zombies",
            f"{stats.resumes} / {stats.reconnects} / {stats.zombies}",
            "",
        ),
        ("final outcome", outcome_text, ""),
    ]
    if printer.console is not None:
        table = Table(title="tally", show_header=False)
        for row in rows:
            table.add_row(*row)
        printer.console.print(table)
        timing = Table("fault", "expected", "recovered in")
        for title, expect, seconds in recoveries:
            timing.add_row(title, expect, "-" if seconds is None else f"{seconds * 1000:.1f} ms")
        printer.console.print(timing)
    else:
        for row in rows:
            print("  ".join(row), file=printer.out)
        for title, expect, seconds in recoveries:
            shown = "-" if seconds is None else f"{seconds * 1000:.1f} ms"
            print(f"{title}: {expect}, recovered in {shown}", file=printer.out)
    timed = [seconds for _, _, seconds in recoveries if seconds is not None]
    if timed:
        printer.line(f"median time to recover: {statistics.median(timed) * 1000:.1f} ms")
    printer.line(
        "PASS: nothing lost" if ok else "FAIL: see the tally above",
        "bold green" if ok else "bold red",
    )


async def core_tour(out: TextIO) -> int:
    """The core ``Websocket`` alone: packets, then each of the three signals."""

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    async with WebsocketTestServer() as server, Websocket() as ws:
        say(f"test server on {server.url}")
        await ws.connect(server.url)
        conn = await server.accepted()
        say(f"connected: state={ws.state.name}")
        await conn.send_json({"op": 8, "d": {"heartbeat_interval": 13750}})
        await conn.send_bytes(b"\x00\x01\x19binary")
        say(f"  packet: {await ws.receive()!r}")
        say(f"  packet: {await ws.receive()!r}")
        scenarios = [
            (4015, "voice server crashed"),
            (4006, "session no longer valid"),
            (4014, "disconnected"),
        ]
        for code, meaning in scenarios:
            if not ws.connected:
                await ws.connect(server.url)
                conn = await server.accepted()
            await conn.send_json({"op": 5, "d": {"speaking": 1}})
            await conn.close(code, meaning)
            say(f"server closes with {code} ({meaning}):")
            say(f"  packet: {await ws.receive()!r}  (delivered before the signal)")
            try:
                await ws.receive()
            except Signal as signal:
                say(f"  -> {type(signal).__name__}: {signal}; state={ws.state.name}")
        await ws.connect(server.url)
        conn = await server.accepted()
        conn.drop()
        say("TCP dropped with no close frame:")
        try:
            await ws.receive()
        except Signal as signal:
            say(f"  -> {type(signal).__name__}: {signal}; state={ws.state.name}")
        try:
            await ws.send_json({"op": 3})
        except Signal as signal:
            say(f"send after the end is never silently dropped -> {type(signal).__name__}")
    return 0
