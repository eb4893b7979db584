"""The wheel as a user gets it: built from this tree, installed into a fresh venv,
``wavegate --version`` and the public imports run from it (not from the source)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import wavegate

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(180)

IMPORTS = """
import wavegate, wavegate.discord, wavegate.testing
from wavegate import Websocket, Session, DisconnectSignal, ReconnectSignal, ResumeSignal
from wavegate.discord import VoiceClient, VoiceCredentials
from wavegate.testing import WebsocketTestServer
from wavegate.testing.voice import FakeVoiceGateway
print(wavegate.__file__)
"""


def test_the_wheel_installs_and_runs_from_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(dist), str(ROOT)],
        check=True, capture_output=True, timeout=150,
    )  # fmt: skip
    (wheel,) = dist.glob("wavegate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "wavegate/py.typed" in names
    assert any(name.endswith("licenses/LICENSE") for name in names)

    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    # The dependencies come from this environment (no network); wavegate from the wheel.
    purelib = subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
    ).strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip

    version = subprocess.run(
        [str(fresh / "bin" / "wavegate"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.stdout == f"wavegate {wavegate.__version__}\n"
    where = subprocess.run([str(python), "-c", IMPORTS], capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(fresh))


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
