"""The pytest plugin as a user's test suite meets it: in pytest-asyncio's strict and
auto modes, and absent when pytest-asyncio is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

STRICT = """
import pytest
from wavegate import ResumeSignal, Websocket
from wavegate.discord import VoiceClient, VoiceCredentials

@pytest.mark.asyncio
async def test_resume_signal(websocket_server):
    async with Websocket() as ws:
        await ws.connect(websocket_server.url)
        conn = await websocket_server.accepted()
        await conn.close(4015, "crashed")
        with pytest.raises(ResumeSignal):
            await ws.receive()

@pytest.mark.asyncio
async def test_voice_ready(fake_voice_gateway):
    credentials = VoiceCredentials("1001", "2001", "s", "t", "1001")
    async with VoiceClient(fake_voice_gateway.url, credentials) as voice:
        await voice.wait_ready(10)
"""

AUTO = STRICT.replace("@pytest.mark.asyncio\n", "")


def run_pytest(tmp: Path, source: str, *options: str, prelude: str = "") -> str:
    (tmp / "test_user.py").write_text(source)
    script = prelude + "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", script, "-p", "no:cacheprovider", "-q", "-c", "/dev/null",
         "--rootdir", str(tmp), str(tmp / "test_user.py"), *options],
        capture_output=True, text=True, timeout=100, cwd=tmp,
    )  # fmt: skip
    return result.stdout + result.stderr


def test_the_fixtures_work_in_strict_mode(tmp_path: Path) -> None:
    output = run_pytest(tmp_path, STRICT, "-o", "asyncio_mode=strict")
    assert "2 passed" in output, output


def test_the_fixtures_work_in_auto_mode(tmp_path: Path) -> None:
    output = run_pytest(tmp_path, AUTO, "-o", "asyncio_mode=auto")
    assert "2 passed" in output, output


def test_the_fixtures_work_when_tests_and_fixtures_share_a_session_loop(
    tmp_path: Path,
) -> None:
    # A new-user trial set only the fixtures' loop scope to session and every
    # handshake timed out (the server's loop was not running during the test); pinning
    # the fixtures to function loops broke this setup instead (found by review). The
    # two scopes must agree, as docs/testing.md says.
    scopes = ("asyncio_default_fixture_loop_scope", "asyncio_default_test_loop_scope")
    options = [option for scope in scopes for option in ("-o", f"{scope}=session")]
    output = run_pytest(tmp_path, STRICT, "-o", "asyncio_mode=strict", *options)
    assert "2 passed" in output, output


BLOCK_PYTEST_ASYNCIO = """
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "pytest_asyncio":
            raise ImportError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, _Absent())
"""


def test_without_pytest_asyncio_the_plugin_defines_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # load ours alone, by name
    source = "def test_plain(request):\n    assert 'websocket_server' not in request.fixturenames\n"
    options = ("-p", "wavegate.testing.pytest_plugin", "--fixtures")
    output = run_pytest(tmp_path, source, *options, prelude=BLOCK_PYTEST_ASYNCIO)
    assert "websocket_server" not in output
    assert "fake_voice_gateway" not in output
    assert "tmp_path" in output, output  # the fixture list was printed
