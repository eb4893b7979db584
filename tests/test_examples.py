"""Every Python example in README.md and docs/ runs, so none can rot.

A block runs as a script of its own in a fresh interpreter, as a reader would paste
it. A block preceded by ``<!-- example: KIND ... -->`` needs what only a deployment
has, and gets it here instead:

- ``usage``: the block defines ``run(url)``; it is run against a server that sends one
  packet and then closes with 4014, and must return.
- ``voice``: Discord's endpoint and credentials (``endpoint``, ``guild_id``,
  ``user_id``, ``session_id``, ``token``, ``channel_id``) come from a fake voice
  gateway, where a second member is already in the channel (so DAVE can start); the
  gateway ends the call with 4021 once the block's client spoke, and the block is
  run with top-level ``await``.
- ``pytest``: the block is a test module, run by pytest in strict asyncio mode.
"""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wavegate.discord import VoiceClient, VoiceCredentials
from wavegate.testing import WebsocketTestServer
from wavegate.testing.voice import FakeVoiceGateway

from .conftest import eventually

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(?:<!-- example: (\w+)[^>]*-->\n)?```python\n(.*?)```", re.S)

pytestmark = pytest.mark.timeout(90)


@dataclass(frozen=True)
class Example:
    where: str
    kind: str | None
    code: str


SNIPPET = re.compile(r'^--8<-- "([^"]+)"\s*$')


def examples() -> list[Example]:
    """Every ```python block of the README and docs (a block that is only a snippet
    include, ``--8<-- "examples/x.py"``, stands for that file), and examples/*.py."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start(2))
            where = f"{path.relative_to(ROOT)}:{line}"
            code = match[2]
            if included := SNIPPET.match(code.strip()):
                code = (ROOT / included[1]).read_text()
            found.append(Example(where, match[1], code))
    for path in sorted((ROOT / "examples").glob("*.py")):
        found.append(Example(str(path.relative_to(ROOT)), None, path.read_text()))
    return found


EXAMPLES = examples()


def test_the_examples_are_found() -> None:
    assert len(EXAMPLES) >= 9
    assert {e.kind for e in EXAMPLES} >= {None, "usage", "voice", "pytest"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
async def test_the_example_runs(example: Example, tmp_path: Path) -> None:
    if example.kind is None:
        await run_script(example.code, tmp_path)
    elif example.kind == "pytest":
        await run_script(example.code, tmp_path, "test_example.py", "-m", "pytest", "-q")
    elif example.kind == "usage":
        await run_usage(example.code)
    elif example.kind == "voice":
        await run_voice(example.code)
    else:
        pytest.fail(f"{example.where}: unknown example kind {example.kind!r}")


async def run_script(code: str, tmp: Path, name: str = "example.py", *how: str) -> None:
    script = tmp / name
    script.write_text(code)
    command = [sys.executable, *how, str(script)] if how else [sys.executable, str(script)]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 80)
    assert process.returncode == 0, output.decode()


async def run_with_await(code: str, names: dict[str, Any]) -> None:
    compiled = compile(code, "<example>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(compiled, names)
    if asyncio.iscoroutine(result):
        await asyncio.wait_for(result, 60)


async def run_usage(code: str) -> None:
    names: dict[str, Any] = {"__name__": "example"}
    await run_with_await(code, names)
    async with WebsocketTestServer() as server:
        running = asyncio.ensure_future(names["run"](server.url))
        conn = await server.accepted()
        await conn.send_json({"op": 2, "d": {}})
        await conn.close(4014, "kicked")
        await asyncio.wait_for(running, 30)


async def run_voice(code: str) -> None:
    async with FakeVoiceGateway(heartbeat_interval=0.5, channel_ids={"1001": "3001"}) as gateway:
        partner = VoiceCredentials("1001", "2002", "partner", "token-2", "3001")
        async with VoiceClient(gateway.url, partner) as other:
            await other.wait_ready(10)
            names = {
                "__name__": "example",
                "endpoint": gateway.url,
                "guild_id": "1001",
                "user_id": "2001",
                "session_id": "example",
                "token": "token-1",
                "channel_id": "3001",
            }
            ending = asyncio.ensure_future(end_the_call_once_spoken(gateway))
            try:
                await run_with_await(code, names)
            finally:
                ending.cancel()
                await asyncio.gather(ending, return_exceptions=True)


async def end_the_call_once_spoken(gateway: FakeVoiceGateway) -> None:
    """Once the example's client sent SPEAKING, a SPEAKING for it to read, then 4021."""

    def spoke() -> bool:
        return any(op == 5 for op, _ in gateway.received_by_user.get("2001", []))

    await eventually(spoke, timeout=30)
    await gateway.send_speaking("example", 7)
    await gateway.close_session("example", 4021, "the example is over")
