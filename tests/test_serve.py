"""`wavegate serve` as another language's test suite would use it: a subprocess, its
control API driven over HTTP, and wss:// with the authority it wrote out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from wavegate import GENERIC, Backoff, Signal, Websocket
from wavegate.discord.voice import VoiceClient, VoiceCredentials

from .conftest import eventually

CREDENTIALS = VoiceCredentials("1001", "2001", "session-1", "token-1", "1001")
FAST = Backoff(base=0.01, cap=0.05, max_attempts=None)
PATIENCE = 15.0

pytestmark = pytest.mark.timeout(90)


class Served:
    """A running ``wavegate serve``: its gateway URL and control API."""

    def __init__(self, process: subprocess.Popen[str], lines: list[str]) -> None:
        self.process = process
        self.url = lines[0].split("listening on ", 1)[1].strip()
        control = [line for line in lines if line.startswith("control API on ")]
        self.control = control[0].split(" on ", 1)[1].strip() if control else ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One HTTP request to the control API (blocking: run it in a thread)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.control + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    async def acall(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await asyncio.to_thread(self.call, method, path, body)


@contextlib.contextmanager
def serving(*options: str) -> Iterator[Served]:
    command = [sys.executable, "-m", "wavegate", "serve", "--port", "0", "--heartbeat", "0.5"]
    process = subprocess.Popen(
        [*command, "--duration", "80", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].lstrip().startswith("(heartbeat"):
            line = process.stdout.readline()
            assert line, f"serve ended: {process.stderr.read() if process.stderr else ''}"
            lines.append(line)
        yield Served(process, lines)
    finally:
        process.terminate()
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


async def test_faults_injected_over_http_reach_a_client() -> None:
    with serving("--control-port", "0") as served:

        async def refresh() -> VoiceCredentials:
            status, body = await served.acall("POST", "/users/2001/token")
            assert status == 200
            return replace(CREDENTIALS, token=body["token"])

        voice = VoiceClient(served.url, CREDENTIALS, backoff=FAST, refresh_credentials=refresh)
        async with voice:
            await voice.wait_ready(PATIENCE)
            status, sessions = await served.acall("GET", "/sessions")
            assert status == 200
            assert [(s["session_id"], s["user_id"], s["connected"]) for s in sessions] == [
                ("session-1", "2001", True)
            ]
            assert await served.acall("POST", "/sessions/session-1/close", {"code": 4015}) == (
                200,
                {"closed": 4015},
            )
            await eventually(lambda: voice.stats.resumes == 1, PATIENCE)
            await served.acall("POST", "/sessions/session-1/drop")
            await eventually(lambda: voice.stats.resumes == 2, PATIENCE)
            await voice.wait_ready(PATIENCE)
            await served.acall("POST", "/sessions/session-1/expire")
            await served.acall("POST", "/sessions/session-1/close", {"code": 4015})
            await eventually(lambda: voice.stats.reconnects == 1, PATIENCE)  # resume refused
            await voice.wait_ready(PATIENCE)
            await voice.send_speaking(1)
            await eventually(lambda: _spoke(served), PATIENCE)
            await served.acall("POST", "/sessions/session-1/stop-acking")
            await eventually(lambda: voice.stats.zombies == 1, PATIENCE)


def _spoke(served: Served) -> bool:
    status, received = served.call("GET", "/received/2001")
    return status == 200 and any(op == 5 for op, _ in received)


async def test_handshakes_can_be_refused_stalled_and_restored() -> None:
    with serving("--control-port", "0") as served:
        assert await served.acall("POST", "/handshakes", {"reject": 503}) == (
            200,
            {"reject": 503},
        )
        ws = Websocket(open_timeout=1)
        with pytest.raises(Signal, match="503"):
            await ws.connect(served.url)
        await served.acall("POST", "/handshakes", {"stall": True})
        with pytest.raises(Signal, match=r"(?i)time"):
            await ws.connect(served.url)
        await served.acall("POST", "/handshakes", {"normal": True})
        await ws.connect(served.url)
        await ws.disconnect()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("POST", "/sessions/nope/close", {"code": 4015}, 404, "no such session"),
        ("POST", "/handshakes", {"reject": 200}, 400, "HTTP status from 400"),
        ("POST", "/handshakes", {"what": 1}, 400, "expected"),
        ("POST", "/handshakes", [1], 400, "JSON object"),
        ("GET", "/bogus", None, 404, "Not Found: GET /bogus"),
        ("DELETE", "/sessions", None, 405, "Method Not Allowed: DELETE /sessions"),
    ],
)
def test_bad_requests_get_a_clear_json_error(
    method: str, path: str, body: Any, status: int, error: str
) -> None:
    with serving("--control-port", "0") as served:
        got_status, got = served.call(method, path, body)
    assert got_status == status
    assert error in got["error"]


async def test_a_fault_on_a_session_whose_client_left_is_a_409_at_once() -> None:
    # Found by a new-user trial: it waited 5 s for a connection, then answered 504
    # with an empty body.
    with serving("--control-port", "0") as served:
        async with VoiceClient(served.url, CREDENTIALS, backoff=FAST) as voice:
            await voice.wait_ready(PATIENCE)
        for fault, body in (("close", {"code": 4015}), ("drop", None)):
            status, answer = await served.acall("POST", f"/sessions/session-1/{fault}", body)
            assert (status, answer) == (409, {"error": "that session has no connection now"})


async def test_a_bad_close_code_is_refused() -> None:
    with serving("--control-port", "0") as served:
        async with VoiceClient(served.url, CREDENTIALS, backoff=FAST) as voice:
            await voice.wait_ready(PATIENCE)
            status, body = await served.acall("POST", "/sessions/session-1/close", {"code": 1006})
            assert status == 400
            assert "code must be" in body["error"]


async def test_tls_with_the_authority_it_wrote(tmp_path: Path) -> None:
    authority = tmp_path / "ca.pem"
    with serving("--tls", "--ca-out", str(authority)) as served:
        assert served.url.startswith("wss://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(authority))
        voice = VoiceClient(served.url, CREDENTIALS, websocket=Websocket(ssl=context))
        async with voice:
            await voice.wait_ready(PATIENCE)
        untrusting = VoiceClient(
            served.url, CREDENTIALS, websocket=Websocket(), backoff=Backoff(max_attempts=1)
        )
        outcome = await asyncio.wait_for(_outcome(untrusting), PATIENCE)
        assert "certificate" in str(outcome).lower()


async def _outcome(voice: VoiceClient) -> object:
    await voice.start()
    return await voice.wait_closed()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--ca-out", "x.pem"), "--ca-out needs --tls"),
        # It said "cannot start on 127.0.0.1: No such file or directory".
        (
            ("--tls", "--ca-out", "/nonexistent/dir/ca.pem"),
            "cannot write the certificate authority to /nonexistent/dir/ca.pem",
        ),
        (("--heartbeat", "-1"), "must be more than 0"),
        # Found by a new-user trial: inf crashed every connection; 0.0001 said "0 ms".
        (("--heartbeat", "inf"), "'inf' is not a finite number"),
        (("--heartbeat", "0.0001"), "is under 1 ms (HELLO gives it in whole ms)"),
        (("--duration", "nan"), "'nan' is not a finite number"),
        (("--port", "70000"), "is not a port"),
        (("--replay-size", "many"), "is not a whole number"),
        (("--channel", "guild=chan"), "is not SERVER=CHANNEL"),
        # The second silently won.
        (
            ("--channel", "1001=3001", "--channel", "1001=3002"),
            "--channel gives server 1001 two channels (3001 and 3002)",
        ),
    ],
)
def test_bad_arguments_get_one_readable_line(options: tuple[str, ...], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wavegate", "serve", "--duration", "1", *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_ca_out_without_tls_is_a_usage_error() -> None:
    # Found by a new-user trial: it exited 1, where connect's bad pairings exit 2.
    result = subprocess.run(
        [sys.executable, "-m", "wavegate", "serve", "--ca-out", "ca.pem", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (2, "wavegate serve: --ca-out needs --tls\n")


def test_a_port_in_use_is_one_line() -> None:
    with serving() as served:
        port = served.url.rsplit(":", 1)[1].split("/", 1)[0]
        result = subprocess.run(
            [sys.executable, "-m", "wavegate", "serve", "--port", port, "--duration", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.startswith("wavegate serve: cannot start on 127.0.0.1: ")
    assert "in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_control_port_in_use_is_named_as_the_control_ports() -> None:
    # It said "cannot start on 127.0.0.1" after "listening on": which port was it?
    with serving() as served:
        port = served.url.rsplit(":", 1)[1].split("/", 1)[0]
        command = [sys.executable, "-m", "wavegate", "serve", "--port", "0"]
        result = subprocess.run(
            [*command, "--control-port", port, "--duration", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"wavegate serve: cannot start the control API on 127.0.0.1:{port}: "
    )
    assert "listening on" not in result.stdout  # found by a new-user trial: it said so first
    assert len(result.stderr.strip().splitlines()) == 1


async def test_an_ipv6_host_is_bracketed_in_the_url_it_prints() -> None:
    with serving("--host", "::1") as served:
        assert served.url.startswith("ws://[::1]:")
        ws = Websocket(policy=GENERIC)
        await ws.connect(served.url)  # the URL printed is one a client can use
        await ws.disconnect()


async def test_channel_ids_make_daves_group_id(tmp_path: Path) -> None:
    credentials = [
        VoiceCredentials("1001", str(user), f"session-{user}", "token", "3001")
        for user in (2001, 2002)
    ]
    with serving("--channel", "1001=3001") as served:
        clients = [VoiceClient(served.url, c, backoff=FAST) for c in credentials]
        for client in clients:
            await client.start()
        try:
            for client in clients:
                await client.wait_dave_ready(PATIENCE)
            assert clients[0].voice_privacy_code == clients[1].voice_privacy_code
        finally:
            for client in clients:
                await client.close()


async def test_the_log_says_why_a_handshake_was_refused_and_who_closed() -> None:
    with serving() as served:
        no_version = served.url.split("?", 1)[0]
        ws = Websocket(policy=GENERIC)
        with pytest.raises(Signal, match="400"):
            await ws.connect(no_version)
        async with VoiceClient(served.url, CREDENTIALS, backoff=FAST) as voice:
            await voice.wait_ready(PATIENCE)
        # The server logs the close once its handler sees it, maybe after our close()
        # returned: read the log until that line (or the patience) comes.
        log = await asyncio.wait_for(
            asyncio.to_thread(read_log_until, served, "closed by the client"), PATIENCE
        )
    assert "refused a handshake: HTTP 400 (the voice gateway v8 needs ?v=8 in its URL)" in log
    assert "user 2001 closed by the client: 1000" in log


def read_log_until(served: Served, marker: str) -> str:
    assert served.process.stderr is not None
    lines = []
    while line := served.process.stderr.readline():
        lines.append(line)
        if marker in line:
            break
    return "".join(lines)
