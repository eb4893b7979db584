"""The `wavegate` command as a user runs it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator

import pytest

from wavegate import Websocket, WebsocketPacketJSON
from wavegate.cli import main
from wavegate.demo import core_tour, storm
from wavegate.demo_call import call
from wavegate.signals import Signal
from wavegate.testing.voice import FakeVoiceGateway


@pytest.mark.timeout(120)
async def test_demo_storm_loses_nothing_and_exits_zero() -> None:
    out = io.StringIO()
    assert await asyncio.wait_for(storm(out), 100) == 0
    text = out.getvalue()
    assert "PASS: nothing lost" in text
    for fault in ("4015", "TCP drop", "zombie", "expired", "4006", "4014"):
        assert fault in text
    assert "0 / 0 / 0" in text  # lost / duplicated / out of order


@pytest.mark.timeout(120)
async def test_demo_call_every_member_agrees_through_join_leave_and_resume() -> None:
    out = io.StringIO()
    assert await asyncio.wait_for(call(out), 100) == 0
    text = out.getvalue()
    assert "PASS: every member agrees" in text
    for step in ("3 join", "dee joins", "bo leaves", "ana resumes", "privacy code"):
        assert step in text
    assert "MLS errors: 0" in text


@pytest.mark.timeout(60)
async def test_demo_call_says_which_member_is_stuck_and_exits_one() -> None:
    def withhold_cys_key_package(gateway: FakeVoiceGateway) -> None:
        gateway.dave_channel("1100").ignored_key_packages.add(303)

    out = io.StringIO()
    assert await call(out, patience=1.0, sabotage=withhold_cys_key_package) == 1
    text = out.getvalue()  # not a terminal: no line is broken (rich wrapped them)
    assert "the call stalled" in text
    assert "FAIL" in text
    assert "cy key package sent, waiting to be welcomed" in text


async def test_core_tour_shows_each_signal() -> None:
    out = io.StringIO()
    assert await core_tour(out) == 0
    text = out.getvalue()
    for name in ("ResumeSignal", "ReconnectSignal", "DisconnectSignal"):
        assert name in text


def test_python_dash_m_wavegate_demo_core_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wavegate", "demo", "--core"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "DisconnectSignal" in result.stdout


@contextlib.contextmanager
def serving(*options: str) -> Iterator[str]:
    """``wavegate serve`` in a subprocess; yields its URL."""
    command = [sys.executable, "-m", "wavegate", "serve", "--port", "0", "--heartbeat", "0.5"]
    server = subprocess.Popen(
        [*command, "--duration", "20", *options], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        yield line.split("listening on ", 1)[1].strip()
    finally:
        server.terminate()
        server.wait(10)


def test_serve_speaks_the_voice_gateway_to_an_outside_client() -> None:
    async def hello(url: str) -> object:
        async with Websocket() as ws:
            await ws.connect(url)
            return await ws.receive()

    with serving() as url:
        packet = asyncio.run(asyncio.wait_for(hello(url), 10))
    assert packet == WebsocketPacketJSON({"op": 8, "d": {"v": 8, "heartbeat_interval": 500}})


async def identify_without_dave(url: str) -> object:
    """IDENTIFY offering DAVE version 0: what the gateway answers (a packet or a signal)."""
    identify = {"server_id": "1", "user_id": "2", "session_id": "s", "token": "t"}
    async with Websocket() as ws:
        await ws.connect(url)
        await ws.receive()  # HELLO
        await ws.send_json({"op": 0, "d": {**identify, "max_dave_protocol_version": 0}})
        try:
            return await ws.receive()
        except Signal as signal:
            return signal


@pytest.mark.parametrize(
    ("options", "answer"),
    [((), "4017"), (("--dave-optional",), "'op': 2")],
    ids=["dave-required", "dave-optional"],
)
def test_serve_requires_dave_unless_told_otherwise(options: tuple[str, ...], answer: str) -> None:
    with serving(*options) as url:
        got = asyncio.run(asyncio.wait_for(identify_without_dave(url), 10))
    assert answer in str(got)


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2


def test_a_missing_extra_is_one_line_naming_it() -> None:
    script = (
        "import sys; sys.modules['davey'] = None\n"
        "from wavegate.cli import main\n"
        "sys.exit(main(['demo', '--call']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.startswith("wavegate demo: ")
    assert "pip install 'wavegate[voice]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(120)
def test_bench_prints_a_table_and_tells_its_progress() -> None:
    from wavegate.bench import run

    steps: list[tuple[str, int, int]] = []
    out = io.StringIO()
    status = run(out, messages=2000, rounds=1, progress=lambda *step: steps.append(step))
    assert status == 0
    assert "wavegate (aiohttp)" in out.getvalue()
    assert "aiohttp (raw)" in out.getvalue()
    assert steps[0] == ("round 1/1: aiohttp (raw)", 0, steps[0][2])
    assert steps[-1] == ("done", steps[0][2], steps[0][2])


@pytest.mark.timeout(120)
def test_bench_shows_a_progress_bar_on_a_terminal_only() -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "wavegate", "bench", "--messages", "2000", "--rounds", "1"],
            stdout=subprocess.PIPE, stderr=follower, text=True, timeout=100,
        )  # fmt: skip
        os.set_blocking(leader, False)
        terminal = b""
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(leader, 65536):
                terminal += chunk
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 0
    assert "round 1/1" in terminal.decode(errors="replace")  # the bar, on the terminal
    assert "round 1/1" not in result.stdout  # the table alone on stdout
    assert "aiohttp (raw)" in result.stdout
