"""The wheel as a user gets it: built from this tree, installed into a fresh venv,
``wavegate --version`` and the public imports run from it (not from the source)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import wavegate

ROOT = Path(__file__).resolve().parent.parent
PICOWS = metadata.version("picows")

pytestmark = pytest.mark.timeout(180)

IMPORTS = """
import wavegate, wavegate.discord, wavegate.testing
from wavegate import Websocket, Session, DisconnectSignal, ReconnectSignal, ResumeSignal
from wavegate.discord import VoiceClient, VoiceCredentials
from wavegate.testing import WebsocketTestServer
from wavegate.testing.voice import FakeVoiceGateway
print(wavegate.__file__)
"""


ROUND_TRIP = """
import asyncio
from wavegate import Websocket, WebsocketPacketJSON
from wavegate.testing import WebsocketTestServer

async def main():
    async with WebsocketTestServer() as server:
        async with Websocket() as ws:
            await ws.connect(server.url)
            conn = await server.accepted()
            await conn.send_json({"op": 2})
            assert await ws.receive() == WebsocketPacketJSON({"op": 2})
    print("round trip ok")

asyncio.run(main())
"""


def _sources(tmp_path: Path) -> Path:
    """A copy of what the build reads, without anything built in place."""
    tree = tmp_path / "tree"
    skip = shutil.ignore_patterns("*.so", "*.c", "__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", tree / "src", ignore=skip)
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "MANIFEST.in",
                 "CHANGELOG.md"):  # fmt: skip
        shutil.copy(ROOT / name, tree / name)
    return tree


def _wheel(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[Path, str]:
    """Build the wheel from a copy of this tree (no network); the wheel and the build's
    output."""
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "-w", str(dist), str(_sources(tmp_path))],
        capture_output=True, text=True, timeout=150, env=env,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("wavegate-*.whl")
    return wheel, built.stdout + built.stderr


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A new venv with ``wheel`` installed; the dependencies come from this
    environment (no network), wavegate from the wheel."""
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    purelib = subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
    ).strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return fresh


def _run(fresh: Path, *args: str) -> str:
    done = subprocess.run(
        [str(fresh / "bin" / args[0]), *args[1:]], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_wheel_installs_and_runs_from_a_fresh_venv(tmp_path: Path) -> None:
    wheel, _ = _wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "wavegate/py.typed" in names
    assert "wavegate/transport/_picows_listener.pyi" in names
    assert any(name.startswith("wavegate/transport/_picows_listener.") and
               name.endswith((".so", ".pyd")) for name in names)  # fmt: skip
    assert not [name for name in names if name.endswith((".c", ".pyx"))]
    assert any(name.endswith("licenses/LICENSE") for name in names)

    fresh = _fresh_venv(tmp_path, wheel)
    version = _run(fresh, "wavegate", "--version").splitlines()
    assert version[0] == f"wavegate {wavegate.__version__}"
    assert f"  transport picows: picows {PICOWS}, compiled listener (default)" in version
    assert _run(fresh, "python", "-c", IMPORTS).strip().startswith(str(fresh))
    assert _run(fresh, "python", "-c", ROUND_TRIP) == "round trip ok\n"


def test_without_a_c_compiler_the_wheel_still_builds_and_falls_back(tmp_path: Path) -> None:
    env = {**os.environ, "CC": "/bin/false", "LDSHARED": "/bin/false"}
    wheel, output = _wheel(tmp_path, env)
    assert "the compiled picows listener was not built" in output
    names = zipfile.ZipFile(wheel).namelist()
    assert not [name for name in names if name.endswith((".so", ".pyd"))]

    fresh = _fresh_venv(tmp_path, wheel)
    version = _run(fresh, "wavegate", "--version")
    assert f"transport picows: picows {PICOWS}, picows' Python-facing connection" in version
    assert "(default)" in version
    assert _run(fresh, "python", "-c", ROUND_TRIP) == "round trip ok\n"


def test_the_sdist_carries_what_its_tests_read(tmp_path: Path) -> None:
    build = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path)!r}))"
    name = subprocess.run(
        [sys.executable, "-c", build], cwd=ROOT, check=True, capture_output=True, text=True,
        timeout=120,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    with tarfile.open(tmp_path / name) as sdist:
        names = {
            member.name.split("/", 1)[1] for member in sdist.getmembers() if "/" in member.name
        }
    for needed in ("tests/conftest.py", "tests/peers.py", "docs/index.md", "docs/supervisor.md",
                   "examples/json_feed.py", "README.md", "CHANGELOG.md", "LICENSE",
                   "src/wavegate/py.typed"):  # fmt: skip
        assert needed in names, needed
    assert not any("__pycache__" in n for n in names)
