"""The second act of ``wavegate demo``: an end-to-end encrypted (DAVE) call.

Three voice clients join one channel of the fake gateway, which plays Discord's DAVE
server (the MLS external sender). A fourth joins, one leaves, one resumes after a
4015: the timeline shows each epoch and the privacy code; the tally proves every
member agrees on the group and decrypts what every other member encrypts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from .backoff import Backoff
from .demo import _PATIENCE, _Printer
from .discord.dave import DaveEvent
from .discord.voice import VoiceClient, VoiceCredentials
from .session import EventKind, SessionEvent
from .signals import SessionClosedError
from .testing.voice import FakeVoiceGateway
from .websocket import Websocket

_SERVER, _CHANNEL = "1100", "2200"
_NAMES = {301: "ana", 302: "bo", 303: "cy", 304: "dee"}
_SHOWN = {EventKind.READY, EventKind.RESUMED, EventKind.CONNECTION_LOST, EventKind.STOPPED}


@dataclass
class _Call:
    """The gateway, the members in the call, and what the timeline needs."""

    gateway: FakeVoiceGateway
    printer: _Printer
    clients: dict[int, VoiceClient] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    errors: int = 0
    patience: float = _PATIENCE
    quiet: bool = False
    """Set once the steps are done: the members' goodbyes are not part of the story."""

    def on_event(self, user: int) -> Callable[[SessionEvent], None]:
        def seen(event: SessionEvent) -> None:
            self.changed.set()
            if event.kind is DaveEvent.ERROR:
                self.errors += 1
            if not self.quiet and (event.kind in _SHOWN or isinstance(event.kind, DaveEvent)):
                self.printer.line(f"  {_NAMES[user]:>4}: {_describe(event)}", _style(event))

        return seen

    async def join(self, user: int) -> None:
        credentials = VoiceCredentials(
            _SERVER, str(user), f"session-{user}", f"token-{user}", _CHANNEL
        )
        client = VoiceClient(
            self.gateway.url,
            credentials,
            backoff=Backoff(base=0.01, cap=0.2, max_attempts=10),
            websocket=Websocket(open_timeout=5, close_timeout=1),
            on_event=self.on_event(user),
        )
        self.clients[user] = client
        await client.start()

    async def leave(self, user: int) -> None:
        await self.clients.pop(user).close()

    def settled(self) -> bool:
        channel = self.gateway.dave_channel(_SERVER)
        return (
            sorted(channel.members) == sorted(self.clients)
            and not channel.pending_transitions()
            and all(
                c.dave_state.active
                and c.dave_state.epoch == channel.epoch
                and not c.dave_state.pending
                for c in self.clients.values()
            )
        )

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until ``condition`` holds, re-checking it on every client event (each
        change of the call's state reaches at least one member as an event)."""
        deadline = time.monotonic() + self.patience
        while not condition():
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"{what} within {self.patience}s: {self.status()}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    async def settle(self) -> int:
        """Wait until every member is active at the channel's epoch; returns it."""
        await self.until(self.settled, "the call did not settle")
        return self.gateway.dave_channel(_SERVER).epoch

    def status(self) -> str:
        return "; ".join(f"{_NAMES[u]} {c.dave_state.status()}" for u, c in self.clients.items())

    def cross_decrypt(self) -> tuple[int, int]:
        """Each member encrypts a frame and every other decrypts it: (ok, tried)."""
        ok = tried = 0
        for user, client in self.clients.items():
            frame = f"opus frame from {_NAMES[user]}".encode()
            sealed = client.encrypt_opus(frame)
            for other_user, other in self.clients.items():
                if other_user != user:
                    tried += 1
                    ok += sealed != frame and other.decrypt(user, sealed) == frame
        return ok, tried

    def agree(self) -> bool:
        sessions = [c.dave for c in self.clients.values()]
        codes = {c.voice_privacy_code for c in self.clients.values()}
        authenticators = {s.get_epoch_authenticator() for s in sessions if s is not None}
        return None not in sessions and len(authenticators) == 1 and len(codes) == 1


def _describe(event: SessionEvent) -> str:
    text = str(event.kind.value)
    data = event.data
    if event.kind in (DaveEvent.READY, DaveEvent.EPOCH):
        text += f"  epoch {data.get('epoch')}"
        if data.get("privacy_code"):
            text += f"  privacy code {_grouped(str(data['privacy_code']))}"
    elif event.kind is DaveEvent.TRANSITION:
        text += f"  transition {data.get('transition_id')} -> version {data.get('version')}"
    elif event.signal is not None and event.kind is EventKind.CONNECTION_LOST:
        text += f"  {event.signal}"
    elif event.detail:
        text += f"  {event.detail}"
    return text


def _grouped(code: str) -> str:
    return " ".join(code[i : i + 5] for i in range(0, len(code), 5))


def _style(event: SessionEvent) -> str:
    if isinstance(event.kind, DaveEvent):
        return "bold red" if event.kind is DaveEvent.ERROR else "cyan"
    return "bold green" if event.kind in (EventKind.READY, EventKind.RESUMED) else "yellow"


async def call(
    out: TextIO,
    *,
    patience: float = _PATIENCE,
    sabotage: Callable[[FakeVoiceGateway], None] | None = None,
) -> int:
    """Run the encrypted call; 0 if every step ended with all members agreeing.

    ``patience``: seconds any step may take; ``sabotage`` is given the gateway before
    anyone joins (to show what a failure looks like).
    """
    printer = _Printer(out)
    async with FakeVoiceGateway(
        heartbeat_interval=0.1, heartbeat_timeout_factor=10, channel_ids={_SERVER: _CHANNEL}
    ) as gateway:
        printer.line("an end-to-end encrypted call (DAVE, MLS via davey)", "bold")
        party = _Call(gateway, printer, patience=patience)
        if sabotage is not None:
            sabotage(gateway)
        rows: list[_Row] = []
        try:
            await _run_call(party, rows)
        except (asyncio.TimeoutError, SessionClosedError) as exc:
            printer.line(f"the call stalled: {exc or type(exc).__name__}", "bold red")
            ok = False
        else:
            ok = all(agreed and good == tried for _, _, _, agreed, good, tried in rows)
            # A resume keeps the group: same epoch, no rekeying.
            ok = ok and party.errors == 0 and rows[-1][1] == rows[-2][1]
        finally:
            party.quiet = True
            for client in party.clients.values():
                await client.close()
    _report_call(printer, rows, errors=party.errors, ok=ok)
    return 0 if ok else 1


_Row = tuple[str, int, str, bool, int, int]


async def _run_call(party: _Call, rows: list[_Row]) -> None:
    """The steps; each appends its row to ``rows`` once the call settled."""

    async def step(title: str) -> None:
        epoch = await party.settle()
        good, tried = party.cross_decrypt()
        members = ", ".join(_NAMES[u] for u in sorted(party.clients))
        rows.append((title, epoch, members, party.agree(), good, tried))

    party.printer.line("STEP ana, bo and cy join", "bold reverse")
    for user in (301, 302, 303):
        await party.join(user)
    await step("3 join")
    party.printer.line("STEP dee joins", "bold reverse")
    await party.join(304)
    await step("dee joins")
    party.printer.line("STEP bo leaves", "bold reverse")
    await party.leave(302)
    await step("bo leaves")
    party.printer.line("STEP the gateway crashes under ana: close 4015", "bold reverse")
    resumed = party.clients[301].stats.resumes
    await party.gateway.close_session("session-301", 4015, "crashed")
    await party.until(lambda: party.clients[301].stats.resumes > resumed, "ana did not resume")
    await step("ana resumes")


def _report_call(printer: _Printer, rows: list[_Row], *, errors: int, ok: bool) -> None:
    header = ("step", "epoch", "members", "all members agree", "frames decrypted")
    shown = [
        (title, str(epoch), members, "yes" if agreed else "NO", f"{good}/{tried}")
        for title, epoch, members, agreed, good, tried in rows
    ]
    if shown and printer.console is not None:
        from rich.table import Table

        table = Table(*header, title="the call")
        for row in shown:
            table.add_row(*row)
        printer.console.print(table)
    elif shown:
        for row in [header, *shown]:
            print(" | ".join(row), file=printer.out)
    printer.line(f"MLS errors: {errors}")
    printer.line(
        "PASS: every member agrees, every frame decrypted" if ok else "FAIL: see above",
        "bold green" if ok else "bold red",
    )
