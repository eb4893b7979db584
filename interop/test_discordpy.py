"""discord.py's voice client (pinned in interop/discordpy/requirements.txt) against
`wavegate serve`, with no helper of ours in between: discord.py logs in to a stub of
Discord's REST API and main gateway (interop/discordpy/main_gateway_stub.py), joins
the voice channel over wss:// and real UDP IP discovery, and every fault is injected
through the control API only. Run by `make interop`, which makes .venv-discordpy.

Each test pins what discord.py does; docs/interop.md has the table.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import JS, JsClient, Line, LineClient, Served

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = ROOT / ".venv-discordpy" / "bin" / "python"
SESSION = "/sessions/main-session-2001"

pytestmark = pytest.mark.timeout(150)


class DpyClient(LineClient):
    """``discordpy_client.py`` in discord.py's own venv."""

    name = "discord.py"

    def __init__(self, served: Served, *options: str) -> None:
        script = HERE / "discordpy" / "discordpy_client.py"
        command = [str(PYTHON), str(script), served.endpoint, served.control, str(served.ca)]
        super().__init__([*command, *options], {**os.environ, "PYTHONUNBUFFERED": "1"})

    def state(self, name: str) -> Line:
        return self.wait_for(lambda m: m["event"] == "state" and m["to"] == name, name)

    def sent(self, op: int) -> Line:
        return self.wait_for(lambda m: m["event"] == "sent" and m["op"] == op, f"op {op} sent")

    def received(self, op: int) -> Line:
        return self.wait_for(lambda m: m["event"] == "received" and m["op"] == op, f"op {op}")

    def op4(self, asked: int) -> Line:
        return self.wait_for(lambda m: m["event"] == "op4" and m["asked"] == asked, f"op4 {asked}")

    def connected(self) -> Line:
        line = self.state("connected")
        self.wait_for(lambda m: m["event"] in ("voice", "error"), "connect()'s outcome", seen=True)
        return line


@pytest.fixture(scope="module", autouse=True)
def discordpy_venv() -> None:
    if not PYTHON.exists():
        pytest.fail("run `make interop` (it installs discord.py into .venv-discordpy first)")


@pytest.fixture
def client(served: Served) -> Iterator[DpyClient]:
    dpy = DpyClient(served)
    yield dpy
    dpy.close()


def test_the_handshake_completes_with_udp_discovery_and_dave(
    served: Served, client: DpyClient
) -> None:
    client.connected()
    voice = next(m for m in client.lines if m["event"] == "voice")
    assert voice == {"event": "voice", "mode": "aead_xchacha20_poly1305_rtpsize", "dave": 1}
    client.wait_for(lambda m: m["event"] == "sent" and m["op"] == 26, "op 26 sent", seen=True)
    client.received(25)  # the external sender, binary
    client.received(6)
    client.received(6)  # two heartbeats answered
    session = served.call("GET", "/sessions")[0]
    assert session["connected"]
    assert session["heartbeats"] >= 2


def test_4006_leaves_rejoins_and_identifies_with_a_fresh_token(
    served: Served, client: DpyClient
) -> None:
    client.connected()
    served.call("POST", f"{SESSION}/close", {"code": 4006, "reason": "session no longer valid"})
    leave = client.op4(2)
    assert leave["channel_id"] is None
    assert client.op4(3)["channel_id"] == "3001"
    identify = client.sent(0)
    assert "token" in identify["keys"]
    client.connected()
    assert served.session("2001")["connected"]
    assert not [m for m in client.lines if m["event"] == "sent" and m["op"] == 7]


def test_a_tcp_drop_rejoins_as_a_new_session_instead_of_resuming(
    served: Served, client: DpyClient
) -> None:
    client.connected()
    served.call("POST", f"{SESSION}/drop")
    assert client.op4(2)["channel_id"] is None
    assert client.op4(3)["channel_id"] == "3001"
    client.sent(0)
    client.connected()
    assert served.session("2001")["resumes"] == 0


DPY_4015 = (
    "discord.py 2.7.1, discord/voice_state.py: _poll_voice_ws's 4015 branch calls "
    "_connect(resume=True), whose _inner_connect re-sends op 4 and waits for "
    "got_both_voice_updates while the state is still `connected`"
)


@pytest.mark.parametrize("order", ["state-first", "server-first"])
def test_known_client_bug_4015_never_resumes(served: Served, order: str) -> None:
    """KNOWN CLIENT BUG (see DPY_4015): 4015 says "resume", but discord.py first
    re-sends op 4. With the two answers in the order Discord's docs list them
    (VOICE_STATE_UPDATE, then VOICE_SERVER_UPDATE), the state update passes unseen
    while `connected` and the server update only reaches got_voice_server_update:
    it waits out its timeout and leaves. With the server update first it does send
    RESUME, but with the new update's token, which belongs to no session (4006), and
    its retries keep resume=True after leaving the channel, so none can succeed.
    Either way the session is not resumed and the bot leaves. This pins that; it is
    not ours to fix."""
    dpy = DpyClient(served, "--order", order, "--timeout", "8")
    try:
        dpy.connected()
        served.call("POST", f"{SESSION}/close", {"code": 4015, "reason": "crashed"})
        assert dpy.op4(2)["channel_id"] == "3001"  # re-sent before any resume
        dpy.state("disconnected")
        dpy.wait_for(lambda m: m["event"] == "op4" and m["channel_id"] is None, "a leave")
        resumes = [m for m in dpy.lines if m["event"] == "sent" and m["op"] == 7]
        assert bool(resumes) == (order == "server-first")
        assert not [m for m in dpy.lines if m["event"] == "received" and m["op"] == 9]
        assert served.session("2001")["resumes"] == 0
    finally:
        dpy.close()


def test_discordpy_and_discordjs_share_an_encrypted_call(served: Served, client: DpyClient) -> None:
    """Two real clients from two languages in one channel, the fake as the MLS
    external sender: discord.py (there first) commits the join, discord.js takes the
    welcome, both say they are ready and the transition to epoch 1 is executed."""
    if not (JS / "node_modules" / "@discordjs" / "voice").exists():
        pytest.fail("run `make interop` (it installs discord.js with npm ci first)")
    client.connected()
    js = JsClient(served, "2002")
    try:
        js.state("ready")
        client.received(27)  # the proposal to add discord.js
        client.sent(28)  # its commit
        client.sent(23)  # ready for the transition
        js.wait_for(lambda m: '[WS] >> {"op":23,' in m.get("message", ""), "op 23 sent", seen=True)
        client.received(22)  # the transition executed
        epochs = {s["user_id"]: s["dave_epoch"] for s in served.call("GET", "/sessions")}
        assert epochs == {"2001": 1, "2002": 1}
    finally:
        js.close()
