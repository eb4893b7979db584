"""discord.js' voice client (@discordjs/voice, pinned in interop/js/package.json)
against `wavegate serve`, with no helper of ours in between: it joins through a
minimal adapter (interop/js/client.mjs) over wss:// and real UDP IP discovery, and
every fault is injected through the control API only. Run by `make interop`.

Each test pins what discord.js does; docs/interop.md has the table.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import JS, JsClient, Served

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def node_modules() -> None:
    if not (JS / "node_modules" / "@discordjs" / "voice").exists():
        pytest.fail("run `make interop` (it installs discord.js with npm ci first)")


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
