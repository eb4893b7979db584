"""discord.js' voice client (@discordjs/voice, pinned in interop/js/package.json)
against `wavegate serve`, with no helper of ours in between: it joins through a
minimal adapter (interop/js/client.mjs) over wss:// and real UDP IP discovery, and
every fault is injected through the control API only. Run by `make interop`.

Each test pins what discord.js does; docs/interop.md has the table.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
JS = HERE / "js"
GUILD, CHANNEL = "1001", "3001"
PATIENCE = 30.0
"""Seconds for discord.js to reach a state: node starts slowly on a busy machine."""

Line = dict[str, Any]

pytestmark = pytest.mark.timeout(120)


class Served:
    """``wavegate serve`` with TLS and its control API, in a subprocess."""

    def __init__(self, tmp: Path, *options: str) -> None:
        self.ca = tmp / "ca.pem"
        command = [sys.executable, "-m", "wavegate", "serve", "--port", "0", "--heartbeat", "1"]
        command += ["--tls", "--ca-out", str(self.ca), "--control-port", "0"]
        command += ["--channel", f"{GUILD}={CHANNEL}", *options]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        lines = [self.process.stdout.readline() for _ in range(4)]
        self.endpoint = lines[0].split("wss://", 1)[1].split("/", 1)[0]
        self.control = lines[1].split(" on ", 1)[1].strip()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.control + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def session(self, user: str) -> dict[str, Any]:
        return next(s for s in self.call("GET", "/sessions") if s["user_id"] == user)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


class JsClient:
    """``node client.mjs``: its JSON lines, read by a thread into a queue."""

    def __init__(self, served: Served, user: str, *, dave: bool = True) -> None:
        env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(served.ca)}
        if not dave:
            env["WAVEGATE_NO_DAVE"] = "1"
        args = [served.endpoint, served.control, GUILD, CHANNEL, user, f"session-{user}"]
        self.process = subprocess.Popen(
            ["node", str(JS / "client.mjs"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[Line] = []
        self._queue: queue.Queue[Line | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                self._queue.put(json.loads(raw))
            except ValueError:
                self._queue.put({"event": "output", "text": raw.rstrip()})
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[Line], bool], what: str, *, seen: bool = False) -> Line:
        """The first line from now on (``seen``: or already read) for which
        ``predicate`` holds, within ``PATIENCE`` seconds in all."""
        if seen:
            for line in self.lines:
                if predicate(line):
                    return line
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                got = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"discord.js: no {what} within {PATIENCE}s") from None
            if got is None:
                raise AssertionError(f"discord.js exited before {what}: {self.lines[-5:]}")
            self.lines.append(got)
            if predicate(got):
                return got

    def state(self, status: str) -> Line:
        return self.wait_for(lambda m: m["event"] == "state" and m["to"] == status, status)

    def sent(self, op: int) -> Line:
        marker = f'[WS] >> {{"op":{op},'
        return self.wait_for(lambda m: marker in m.get("message", ""), f"op {op} sent")

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="module", autouse=True)
def node_modules() -> None:
    if not (JS / "node_modules" / "@discordjs" / "voice").exists():
        pytest.fail("run `make interop` (it installs discord.js with npm ci first)")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    running = Served(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def client(served: Served) -> Iterator[JsClient]:
    js = JsClient(served, "2001")
    yield js
    js.close()


def test_the_handshake_completes_with_udp_discovery_and_dave(
    served: Served, client: JsClient
) -> None:
    client.state("ready")
    key_package = "[WS] >> [bin] opcode 26"
    client.wait_for(lambda m: key_package in m.get("message", ""), "op 26 sent", seen=True)
    client.wait_for(lambda m: "external sender" in m.get("message", ""), "op 25", seen=True)
    session = served.session("2001")
    assert session["connected"]
    assert session["heartbeats"] >= 0


def test_4015_resumes_with_seq_ack(served: Served, client: JsClient) -> None:
    client.state("ready")
    served.call("POST", "/sessions/session-2001/close", {"code": 4015, "reason": "crashed"})
    resume = client.sent(7)
    assert '"seq_ack"' in resume["message"]
    client.wait_for(lambda m: '[WS] << {"op":9' in m.get("message", ""), "RESUMED")
    assert served.session("2001")["resumes"] == 1
    assert not [m for m in client.lines if m["event"] == "op4" and m["asked"] > 1]


def test_a_tcp_drop_resumes(served: Served, client: JsClient) -> None:
    client.state("ready")
    served.call("POST", "/sessions/session-2001/drop")
    client.sent(7)
    client.wait_for(lambda m: '[WS] << {"op":9' in m.get("message", ""), "RESUMED")


def test_4006_rejoins_with_a_fresh_token(served: Served, client: JsClient) -> None:
    client.state("ready")
    served.call("POST", "/sessions/session-2001/close", {"code": 4006, "reason": "invalid"})
    client.wait_for(lambda m: m["event"] == "op4" and m["asked"] == 2, "a new op 4 (rejoin)")
    client.sent(0)  # IDENTIFY with the fresh token: accepted
    client.state("ready")
    assert served.session("2001")["connected"]


def test_known_client_bug_4017_without_dave_rejoins_in_a_loop(served: Served) -> None:
    """KNOWN CLIENT BUG (discord.js @discordjs/voice 0.19.2): 4017 means "DAVE
    required" and retrying cannot help, but VoiceConnection rejoins after every close
    code except 4014 (VoiceConnection.ts, onNetworkingClose -> rejoin()), so a client
    with daveEncryption: false asks for a new token and IDENTIFYs again, forever.
    This pins the behaviour; it is not ours to fix."""
    js = JsClient(served, "2002", dave=False)
    try:
        identify = js.sent(0)
        assert '"max_dave_protocol_version":0' in identify["message"]
        js.wait_for(lambda m: m["event"] == "op4" and m["asked"] >= 3, "a third op 4")
        identifies = [m for m in js.lines if '[WS] >> {"op":0,' in m.get("message", "")]
        assert len(identifies) >= 2
        assert not [m for m in js.lines if m["event"] == "state" and m["to"] == "ready"]
    finally:
        js.close()
