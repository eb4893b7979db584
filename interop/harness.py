"""What the interop tests share: ``wavegate serve`` in a subprocess, and a third-party
client in another that reports one JSON line per event."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

GUILD, CHANNEL = "1001", "3001"
JS = Path(__file__).resolve().parent / "js"
PATIENCE = 30.0
"""Seconds for a client to reach a state: node and discord.py start slowly on a busy
machine, and discord.py backs off for up to seconds between its attempts."""

Line = dict[str, Any]


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


class LineClient:
    """A client subprocess: its JSON lines, read by a thread into a queue. It leaves
    and exits when its stdin closes."""

    name = "the client"

    def __init__(self, command: list[str], env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(env),
        )
        self.lines: list[Line] = []
        self.exited = False
        """Its output ended (the process is gone or going)."""
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

    def wait_for(
        self,
        predicate: Callable[[Line], bool],
        what: str,
        *,
        seen: bool = False,
        patience: float = PATIENCE,
    ) -> Line:
        """The first line from now on (``seen``: or already read) for which
        ``predicate`` holds, within ``patience`` seconds in all."""
        if seen:
            for line in self.lines:
                if predicate(line):
                    return line
        deadline = time.monotonic() + patience
        while True:
            if self.exited:
                raise AssertionError(f"{self.name} exited before {what}: {self.lines[-5:]}")
            try:
                got = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"{self.name}: no {what} within {patience}s: {self.lines[-8:]}"
                ) from None
            if got is None:
                self.exited = True
                continue
            self.lines.append(got)
            if predicate(got):
                return got

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


class JsClient(LineClient):
    """``node client.mjs`` (the adapter that plays the main gateway)."""

    name = "discord.js"

    def __init__(self, served: Served, user: str, *, dave: bool = True) -> None:
        env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(served.ca)}
        if not dave:
            env["WAVEGATE_NO_DAVE"] = "1"
        args = [served.endpoint, served.control, GUILD, CHANNEL, user, f"session-{user}"]
        super().__init__(["node", str(JS / "client.mjs"), *args], env)

    def state(self, status: str) -> Line:
        return self.wait_for(lambda m: m["event"] == "state" and m["to"] == status, status)

    def sent(self, op: int) -> Line:
        marker = f'[WS] >> {{"op":{op},'
        return self.wait_for(lambda m: marker in m.get("message", ""), f"op {op} sent")
