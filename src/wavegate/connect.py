"""``wavegate connect URL``: an interactive client that rides out drops.

Like ``python -m websockets URL`` or wscat, for pipes and terminals alike: each stdin
line is sent (as a JSON object, or as text with ``--text``), each received frame is
printed as one JSON line on stdout, and what happens to the connection goes to
stderr. When the connection ends, the close-code policy decides: a resume reconnects
at once, a reconnect backs off, a disconnect stops with status 1 and a line naming
the close code. A line whose send failed because the connection ended is sent again
on the next one (a line already written to a socket that then drops is not: nothing
acknowledges it). On stdin EOF the client sends what it still has, closes with 1000
and exits 0; lines it could never send are counted on stderr (status 1).

The decisions are pure functions (:func:`decide`, :func:`parse_line`,
:func:`format_packet`); :func:`run` only carries them out.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import ssl
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from ._args import non_negative, positive, whole
from .backoff import Backoff, RetrySchedule
from .packets import WebsocketPacket, WebsocketPacketBytes, WebsocketPacketJSON
from .policy import DISCORD_GATEWAY, DISCORD_VOICE, GENERIC, ClosePolicy
from .redact import redact_url
from .signals import (
    DisconnectSignal,
    EncodeError,
    Event,
    InvalidURLError,
    PayloadError,
    ResumeSignal,
    Signal,
)
from .transport import PROXY_ANSWERED, REDIRECT_STATUSES, TransportOptions
from .websocket import Websocket

POLICIES: dict[str, ClosePolicy] = {
    "generic": GENERIC,
    "discord-voice": DISCORD_VOICE,
    "discord-gateway": DISCORD_GATEWAY,
}
Binary = Literal["base64", "hex"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``connect`` command's options."""
    parser.add_argument("url", help="ws:// or wss:// URL")
    parser.add_argument(
        "--policy",
        choices=sorted(POLICIES),
        default="generic",
        help="the close-code policy that decides resume / reconnect / stop (generic)",
    )
    parser.add_argument(
        "--text",
        action="store_true",
        help="send each line as a text frame (not parsed as JSON); frames are still "
        "printed one per line, as JSON strings",
    )
    parser.add_argument(
        "--wait",
        type=wait_seconds,
        default=0.0,
        metavar="SECONDS",
        help="after stdin ends, keep printing what arrives for this long before closing "
        "(0; inf: until the server closes)",
    )
    parser.add_argument(
        "--binary",
        choices=["base64", "hex"],
        default="base64",
        help="how binary frames are printed (base64)",
    )
    parser.add_argument(
        "--retries",
        type=whole,
        default=5,
        help="connections in a row that moved no frame (failed to open, or closed before "
        "anything was sent or received) before giving up (5; 0: never connect again, "
        "not even to resume)",
    )
    parser.add_argument(
        "--open-timeout", type=positive, default=10.0, help="seconds to open a connection (10)"
    )
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--cafile",
        type=ca_file,
        metavar="FILE",
        help="verify a wss:// server (and an https:// proxy) against the CA certificates "
        "in FILE (PEM) instead of the system's: `wavegate serve --tls --ca-out FILE` "
        "writes one",
    )
    trust.add_argument(
        "-k",
        "--insecure",
        action="store_true",
        help="do not verify a wss:// server's (or an https:// proxy's) certificate: "
        "encrypted, but to anyone",
    )
    parser.add_argument(
        "--proxy",
        type=proxy_url,
        metavar="URL",
        help="connect through this http:// or https:// proxy (HTTP CONNECT)",
    )
    parser.add_argument(
        "--subprotocol",
        action="append",
        default=[],
        type=subprotocol_name,
        metavar="NAME",
        help="offer this subprotocol (Sec-WebSocket-Protocol); repeat it to offer more, "
        "in order of preference",
    )


def subprotocol_name(text: str) -> str:
    """``--subprotocol``: an HTTP token."""
    try:
        TransportOptions(subprotocols=(text,))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def option_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with options that are each fine alone, as an argument error."""
    if len(set(args.subprotocol)) < len(args.subprotocol):
        try:
            TransportOptions(subprotocols=tuple(args.subprotocol))
        except ValueError as exc:  # names the positions, not a name (it may be a token)
            return f"argument --subprotocol: {exc}"
    return trust_problem(args)


def trust_problem(args: argparse.Namespace) -> str | None:
    """``--cafile`` or ``-k`` with no TLS to apply it to (a ``ws://`` URL, and no
    ``https://`` proxy): what to say, as an argument error."""
    if args.cafile is None and not args.insecure:
        return None
    # Stripped as the library strips it (a URL from a file ends with its line feed).
    url, proxy = args.url.strip().lower(), (args.proxy or "").lower()
    if not url.startswith("ws://") or proxy.startswith("https://"):
        return None
    option = "--cafile" if args.cafile is not None else "-k/--insecure"
    return (
        f"argument {option}: it verifies wss:// servers and https:// proxies; "
        f"{redact_url(args.url)} is not encrypted"
    )


def wait_seconds(text: str) -> float:
    """``--wait``: seconds, 0 or more, or ``inf`` (until the server closes)."""
    infinite = text.strip().lower().lstrip("+") in ("inf", "infinity")
    return math.inf if infinite else non_negative(text)


def ca_file(path: str) -> ssl.SSLContext:
    """A TLS client context that trusts the CA certificates in ``path`` only."""
    if not path:  # the ssl module would take "" for "no file": the system's CAs
        raise argparse.ArgumentTypeError("the CA file's name is empty")
    try:
        return ssl.create_default_context(cafile=path)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if isinstance(exc, ssl.SSLError):
            why = f"no CA certificate in PEM form ({exc.reason or exc})"
        raise argparse.ArgumentTypeError(f"cannot use {path!r}: {why}") from None


def proxy_url(text: str) -> str:
    """A proxy URL the transports take (checked without ever showing its password)."""
    try:
        TransportOptions(proxy=text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# -- pure decisions -----------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What to do after a connection ended: ``"resume"`` (again at once),
    ``"reconnect"`` (after ``delay``) or ``"stop"`` (exit ``status``)."""

    action: Literal["resume", "reconnect", "stop"]
    delay: float = 0.0
    status: int = 0
    message: str = ""


def decide(
    signal: Signal, delay: float | None, attempts: int, url: str = "", failures: int | None = None
) -> Step:
    """The step after ``signal``; ``delay`` is the retry schedule's next delay
    (``None``: attempts spent), ``attempts`` the retries since a connection stayed up
    (this one included), ``failures`` those since one was up at all (what the give-up
    line counts; ``attempts`` when not given). A resume is at once only the first time
    in a row: a server that keeps asking for one is backed off from like any other."""
    failures = attempts if failures is None else failures
    if isinstance(signal, DisconnectSignal):
        if signal.code == 1000 and not signal.initiated_locally:  # a normal closure
            return Step("stop", status=0, message="closed by the server (1000)")
        hint = ""
        if signal.event is Event.CONNECT_TLS_CERTIFICATE:
            hint = " (--cafile FILE trusts a CA of your own; -k does not verify)"
        return Step("stop", status=1, message=f"stopped: {describe(signal, url)}{hint}")
    if delay is None:
        retries = {0: "without retrying", 1: "after 1 retry"}.get(
            failures, f"after {failures} retries"
        )
        given_up = f"gave up {retries}: {describe(signal, url)}"
        return Step("stop", status=1, message=given_up)
    if isinstance(signal, ResumeSignal) and attempts <= 1 and not signal.retry_after:
        return Step("resume", message=f"{describe(signal, url)}; connecting again now")
    delay = max(delay, signal.retry_after or 0.0)  # the server's wish holds
    return Step("reconnect", delay, message=f"{describe(signal, url)}; retrying in {delay:.1f} s")


_OPENING = {
    Event.CONNECT_TIMEOUT: "no answer in time",
    Event.CONNECT_REFUSED: "connection refused",
    Event.CONNECT_DNS: "the host name does not resolve",
    Event.CONNECT_TLS: "TLS failed",
    Event.CONNECT_TLS_CERTIFICATE: "the certificate did not verify",
    Event.CONNECT_ERROR: "cannot connect",
    Event.HANDSHAKE_INVALID: "the websocket upgrade answer was invalid",
}


def describe(signal: Signal, url: str = "") -> str:
    """One stderr line's worth: ``close 4014 (reason)``, ``URL refused the websocket
    upgrade: HTTP 400``, ``URL: connection refused``..."""
    where = f"{url}: " if url else ""
    if signal.event is Event.HANDSHAKE_STATUS:
        if signal.reason.startswith(PROXY_ANSWERED):
            return where + signal.reason
        if signal.code in REDIRECT_STATUSES and signal.reason:
            return f"{where}the server answered the websocket upgrade with {signal.reason}"
        wait = "" if signal.retry_after is None else f" (Retry-After: {signal.retry_after:g} s)"
        return f"{where}the server refused the websocket upgrade with HTTP {signal.code}{wait}"
    if signal.code is not None:
        reason = f" ({signal.reason})" if signal.reason else ""
        return f"close {signal.code}{reason}"
    what = _OPENING.get(signal.event) or str(signal.event.value).replace("_", " ")
    if signal.reason.startswith(what):  # "connection refused (at the proxy ...)"
        what = signal.reason
    elif signal.reason:
        what = f"{what} ({signal.reason})"
    return where + what


def parse_line(line: str, text: bool) -> tuple[str, Any]:
    """``("json", object)``, ``("text", str)``, ``("skip", None)`` for a blank line, or
    ``("error", why)`` for a line that is not a JSON object."""
    line = line.rstrip("\r\n")
    if text:
        return "text", line
    if not line.strip():
        return "skip", None
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return "error", f"not JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return "error", "not JSON this client can read (nested too deeply)"
    if not isinstance(value, dict):
        return "error", f"not a JSON object (a {type(value).__name__})"
    return "json", value


def format_packet(packet: WebsocketPacket, binary: Binary) -> str:
    """One JSON line for a received frame: the object itself, a JSON string for
    text, or ``{"binary": ...}`` in base64 or hex."""
    if isinstance(packet, WebsocketPacketJSON):
        return json.dumps(packet.payload, ensure_ascii=False)
    if isinstance(packet, WebsocketPacketBytes):
        data = packet.payload
        shown = data.hex() if binary == "hex" else base64.b64encode(data).decode()
        return json.dumps({"binary": shown})
    return json.dumps(getattr(packet, "payload", ""), ensure_ascii=False)


# -- I/O ----------------------------------------------------------------------------


class Lines:
    """stdin's lines as an asyncio queue (``None`` at EOF), read by a thread so that
    pipes, files and terminals all work.

    The thread reads the file descriptor itself: a daemon thread blocked inside
    ``sys.stdin``'s buffered reader would abort the interpreter at exit. Lines are
    decoded leniently: one that is not UTF-8 is reported when it cannot be encoded for
    sending, instead of ending the thread (and with it the EOF the client waits for).
    """

    def __init__(self, fd: int, text: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.read = 0
        """Lines read that are not blank (counted by the thread as it reads: the loop
        may not have seen them yet). Not parsed here: that is the loop's, once."""

        def put(raws: list[bytes]) -> None:
            decoded = [raw.decode("utf-8", "surrogateescape") for raw in raws]
            # Counted before any is handed over (only this thread writes the count).
            self.read += sum(1 for line in decoded if text or line.strip())
            for line in decoded:
                loop.call_soon_threadsafe(self.queue.put_nowait, line)

        def read() -> None:
            buffered = b""
            try:
                while chunk := os.read(fd, 65536):
                    *complete, buffered = (buffered + chunk).split(b"\n")
                    put(complete)
                if buffered:
                    put([buffered])
            except OSError:
                pass  # stdin closed under us: the same as its end
            finally:
                loop.call_soon_threadsafe(self.queue.put_nowait, None)

        threading.Thread(target=read, daemon=True, name="wavegate-connect-stdin").start()


class Client:
    """One ``wavegate connect`` run."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.out = out
        self.err = err
        via = "" if args.proxy is None else f" through the proxy {redact_url(args.proxy)}"
        self.url = redact_url(args.url) + via
        """The server's URL (and the proxy's), as shown: secrets removed."""
        self.ws = Websocket(
            policy=POLICIES[args.policy],
            open_timeout=args.open_timeout,
            receive_mode="text" if args.text else "json",
            ssl=args.cafile if args.cafile is not None else not args.insecure,
            proxy=args.proxy,
            subprotocols=args.subprotocol,
        )
        self.pending: deque[bytes] = deque()
        """Encoded lines to send, first in line until written whole."""
        self.schedule = RetrySchedule(
            Backoff(base=0.5, cap=10.0, max_attempts=max(1, args.retries))
        )
        self.working = False
        """A frame went either way on this connection: it counts as one that worked
        (a server that accepts and at once closes would otherwise be retried for ever)."""
        self.sent = 0
        self.dropped = 0
        """Lines reported as not sent (not JSON, or not encodable)."""
        self.line_number = 0
        self.eof = False
        self.listen_until: float | None = None
        """With ``--wait``: when to stop listening after stdin ended."""

    def status(self, message: str) -> None:
        print(f"wavegate connect: {message}", file=self.err, flush=True)

    async def run(self, lines: Lines) -> int:
        retries = self.args.retries
        schedule = self.schedule
        while True:
            try:
                await self.ws.connect(self.args.url)
                chosen = self.ws.subprotocol
                self.status(
                    f"connected to {self.url}" + (f" (subprotocol {chosen})" if chosen else "")
                )
                self.working = False
                await self._pump(lines)
            except Signal as signal:
                delay = schedule.next_delay() if retries else None
                step = decide(signal, delay, schedule.attempts, self.url, schedule.failures)
                if step.action != "stop" and not self.pending and self._waited_enough(step.delay):
                    self.status(f"{describe(signal, self.url)}; the --wait time is over")
                    return self._unsent(0, lines)
                self.status(step.message)
                if step.action == "stop":
                    return self._unsent(step.status, lines)
                await asyncio.sleep(step.delay)
                continue
            except BrokenPipeError:  # stdout's reader left (`| head`): nothing to show to
                _silence_stdout()
                return 0
            await self.ws.disconnect(1000)
            self.status("closed (1000)")
            return 0

    def _listen(self) -> None:
        """Stdin ended and every line is sent: ``--wait`` starts (once, across
        reconnects)."""
        if self.listen_until is None and self.args.wait > 0:
            self.listen_until = asyncio.get_running_loop().time() + self.args.wait

    def _waited_enough(self, delay: float) -> bool:
        """``--wait`` runs out before a retry ``delay`` from now would start."""
        until = self.listen_until
        return until is not None and asyncio.get_running_loop().time() + delay >= until

    def _worked(self) -> None:
        if not self.working:
            self.working = True
            self.schedule.healthy()

    def _unsent(self, status: int, lines: Lines) -> int:
        """``status``, or 1 with a line saying so when lines read were never sent
        (queued, or read but not yet taken: no connection to send them)."""
        count = lines.read - self.sent - self.dropped
        if not count:
            return status
        self.status(f"{count} line{'s' if count > 1 else ''} not sent")
        return 1

    async def _pump(self, lines: Lines) -> None:
        """Print and send until stdin ends and everything is sent (returns) or the
        connection ends (raises its signal)."""
        reading = asyncio.ensure_future(self._print_frames())
        sending = asyncio.ensure_future(self._send_lines(lines))
        try:
            done, _ = await asyncio.wait({reading, sending}, return_when="FIRST_COMPLETED")
            for task in done:
                task.result()
            if sending in done and self.listen_until is not None:  # listen a while
                left = max(0.0, self.listen_until - asyncio.get_running_loop().time())
                done, _ = await asyncio.wait({reading}, timeout=left)
                for task in done:
                    task.result()
        finally:
            for task in (reading, sending):
                task.cancel()
            await asyncio.gather(reading, sending, return_exceptions=True)

    async def _print_frames(self) -> None:
        while True:
            try:
                packet = await self.ws.receive()
            except PayloadError as exc:
                print(json.dumps(exc.raw, ensure_ascii=False), file=self.out, flush=True)
                self._worked()
                continue
            print(format_packet(packet, self.args.binary), file=self.out, flush=True)
            self._worked()

    async def _send_lines(self, lines: Lines) -> None:
        while True:
            if not self.pending:
                if self.eof or not await self._take(lines):
                    self._listen()
                    return
                continue
            await self.ws.send_text(self.pending[0])
            self.pending.popleft()
            self.sent += 1
            self._worked()

    async def _take(self, lines: Lines) -> bool:
        """Queue the next stdin line to send; False at EOF."""
        line = await lines.queue.get()
        if line is None:
            self.eof = True
            return False
        self.line_number += 1
        kind, value = parse_line(line, self.args.text)
        if kind == "skip":
            return True
        if kind != "error":
            try:  # encoded now: a value that cannot be sent is this line's problem only
                value = self.ws.encode_json(value) if kind == "json" else value.encode()
            except (EncodeError, UnicodeEncodeError) as exc:
                kind, value = "error", f"cannot be encoded ({exc})"
        if kind == "error":
            self.dropped += 1
            self.status(f"line {self.line_number} not sent: {value}")
        else:
            self.pending.append(value)
        return True


async def connect(args: argparse.Namespace, *, out: TextIO = sys.stdout) -> int:
    """Run ``wavegate connect``; the exit status (2 for a bad URL or option)."""
    client = Client(args, out, sys.stderr)
    lines = Lines(sys.stdin.fileno(), args.text)
    try:
        return await client.run(lines)
    except InvalidURLError as exc:
        print(f"wavegate connect: {exc}", file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(Exception):
            await client.ws.disconnect()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
