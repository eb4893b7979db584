"""UDP IP discovery and the media socket: the packet format, the client against the
fake gateway's UDP endpoint and against a raw-socket responder written here, and every
way discovery can fail."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from wavegate import Backoff, Websocket
from wavegate.discord import ip_discovery
from wavegate.discord.payloads import Ready
from wavegate.discord.udp import DiscoveryFailed, UdpDiscovery, VoiceUdp
from wavegate.discord.voice import VoiceClient, VoiceCredentials
from wavegate.signals import SessionClosedError
from wavegate.testing.voice import FakeVoiceGateway

from .conftest import eventually
from .peers import UdpResponder, udp_responder
from .voice_harness import refreshing

CREDENTIALS = VoiceCredentials("1001", "2001", "session-1", "token-1", "1001")
PATIENCE = 10.0

pytestmark = pytest.mark.timeout(60)


# -- the packets ----------------------------------------------------------------------


def test_a_request_is_74_bytes_big_endian() -> None:
    packet = ip_discovery.request(0x01020304)
    assert len(packet) == 74
    assert packet[:8] == b"\x00\x01\x00\x46\x01\x02\x03\x04"
    assert packet[8:] == bytes(66)
    assert ip_discovery.parse_request(packet) == 0x01020304
    assert ip_discovery.parse_request(packet + b"\0\0\0\0") == 0x01020304  # 78 bytes


def test_a_response_carries_the_address_and_port() -> None:
    packet = ip_discovery.response(7, "203.0.113.9", 50123)
    assert len(packet) == 74
    assert ip_discovery.parse_response(packet, 7) == ("203.0.113.9", 50123)


@pytest.mark.parametrize(
    ("packet", "error"),
    [
        (b"\x00\x02\x00\x46", "4 bytes"),
        (ip_discovery.request(7), "not a discovery response"),
        (ip_discovery.response(8, "1.2.3.4", 1), "ssrc 8, not 7"),
        (struct.pack(">HHI", 2, 70, 7) + bytes(66), "no address"),
        (struct.pack(">HHI", 2, 70, 7) + b"\xff" + bytes(65), "not ASCII"),
        (struct.pack(">HHI", 2, 12, 7) + bytes(66), "length 12"),
    ],
    ids=["short", "a request", "other ssrc", "no address", "not ascii", "bad length"],
)
def test_bad_responses_are_refused_with_a_reason(packet: bytes, error: str) -> None:
    with pytest.raises(ip_discovery.DiscoveryError, match=error):
        ip_discovery.parse_response(packet, 7)


def test_an_address_too_long_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        ip_discovery.response(1, "x" * 64, 1)


# -- against a responder written on a plain datagram endpoint (tests/peers.py) -------


@pytest_asyncio.fixture
async def responder() -> AsyncIterator[tuple[UdpResponder, int]]:
    async with udp_responder(ignore=2) as running:
        yield running


async def test_lost_requests_are_sent_again(responder: tuple[UdpResponder, int]) -> None:
    server, port = responder
    udp = await VoiceUdp.open("127.0.0.1", port)
    try:
        found = await udp.discover(42, timeout=0.2, attempts=3)
    finally:
        udp.close()
    assert found == udp.local
    assert len(server.requests) == 3  # two lost, the third answered
    assert all(len(r) == 74 for r in server.requests)


async def test_no_answer_is_a_clear_error_after_the_attempts() -> None:
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(("127.0.0.1", 0))  # bound, never answers
    try:
        udp = await VoiceUdp.open("127.0.0.1", quiet.getsockname()[1])
        with pytest.raises(DiscoveryFailed, match=r"no answer .* \(2 requests, 0.05 s apart\)"):
            await udp.discover(1, timeout=0.05, attempts=2)
        udp.close()
    finally:
        quiet.close()


def _closed_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing listens on: datagrams to it bring back
    ICMP "port unreachable"."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as free:
        free.bind(("127.0.0.1", 0))
        port: int = free.getsockname()[1]
    return port


async def test_an_unreachable_port_fails_at_once() -> None:
    udp = await VoiceUdp.open("127.0.0.1", _closed_udp_port())
    try:
        with pytest.raises(DiscoveryFailed, match="refused"):
            await udp.discover(1, timeout=5, attempts=3)
    finally:
        udp.close()


async def test_receive_ends_when_the_socket_closes(responder: tuple[UdpResponder, int]) -> None:
    _, port = responder
    udp = await VoiceUdp.open("127.0.0.1", port)
    waiting = asyncio.ensure_future(udp.receive())
    await asyncio.sleep(0)
    udp.close()
    with pytest.raises(ConnectionError, match="closed"):
        await asyncio.wait_for(waiting, PATIENCE)
    with pytest.raises(ConnectionError, match="closed"):
        udp.send(b"rtp")


def _raw_voice_server() -> socket.socket:
    """A voice server's UDP side as a plain blocking socket, driven by the test."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(PATIENCE)
    return server


async def test_media_that_came_before_the_answer_waits_for_receive_in_order() -> None:
    with _raw_voice_server() as server:
        udp = await VoiceUdp.open("127.0.0.1", server.getsockname()[1])
        try:
            discovering = asyncio.ensure_future(udp.discover(9, timeout=PATIENCE))
            request, client = await asyncio.to_thread(server.recvfrom, 100)
            assert ip_discovery.parse_request(request) == 9
            for packet in (b"media 1", b"media 2", ip_discovery.response(9, *client), b"3"):
                server.sendto(packet, client)
            assert await discovering == client
            assert [await udp.receive() for _ in range(3)] == [b"media 1", b"media 2", b"3"]
            assert udp.dropped == 0
        finally:
            udp.close()


async def test_a_full_receive_queue_drops_the_oldest_and_counts_them() -> None:
    with _raw_voice_server() as server:
        udp = await VoiceUdp.open("127.0.0.1", server.getsockname()[1], queue_size=2)
        try:
            for n in range(5):
                server.sendto(b"%d" % n, udp.local)
            await eventually(lambda: udp.dropped == 3, PATIENCE)
            assert [await udp.receive(), await udp.receive()] == [b"3", b"4"]
        finally:
            udp.close()


async def test_a_datagram_the_socket_has_no_room_for_is_counted_not_queued() -> None:
    # A Unix datagram pair whose reader never reads: its queue fills and the sender's
    # socket refuses more (loopback UDP never does; a busy uplink does).
    mine, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with peer:
        udp = await VoiceUdp.wrap(mine)
        try:
            attempts = 0
            while udp.unsent == 0 and attempts < 100_000:
                udp.send(b"x" * 1000)
                attempts += 1
            assert udp.unsent == 1
            peer.setblocking(False)
            arrived = 0
            with contextlib.suppress(BlockingIOError):
                while peer.recv(2000):
                    arrived += 1
            assert arrived == attempts - 1  # all but the one counted, none sent late
            udp.send(b"room again")
            assert peer.recv(2000) == b"room again"
        finally:
            udp.close()
    assert udp.closed


async def test_a_receive_queue_must_hold_a_datagram() -> None:
    mine, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with mine, peer, pytest.raises(ValueError, match="queue_size must be at least 1"):
        await VoiceUdp.wrap(mine, queue_size=0)


async def test_closing_during_discovery_ends_it_with_the_reason() -> None:
    with _raw_voice_server() as server:
        udp = await VoiceUdp.open("127.0.0.1", server.getsockname()[1])
        discovering = asyncio.ensure_future(udp.discover(9, timeout=PATIENCE))
        await asyncio.to_thread(server.recvfrom, 100)  # the request went: it waits
        udp.close()
        with pytest.raises(DiscoveryFailed, match="closed during IP discovery"):
            await asyncio.wait_for(discovering, PATIENCE)


async def test_a_datagram_too_large_to_send_raises() -> None:
    with _raw_voice_server() as server:
        udp = await VoiceUdp.open("127.0.0.1", server.getsockname()[1])
        try:
            with pytest.raises(OSError, match="too long"):
                udp.send(bytes(70_000))
            assert udp.unsent == 0
        finally:
            udp.close()


async def test_a_send_the_system_refuses_after_an_icmp_error_is_counted() -> None:
    udp = await VoiceUdp.open("127.0.0.1", _closed_udp_port())
    try:
        udp.send(b"rtp")  # sent; "port unreachable" comes back to the socket
        sent = 1
        while udp.unsent == 0 and sent < 1000:  # (loopback answers before send returns)
            udp.send(b"rtp")
            sent += 1
        assert udp.unsent == 1
        with pytest.raises(DiscoveryFailed, match="refused"):
            await udp.discover(1, timeout=PATIENCE, attempts=1)
    finally:
        udp.close()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ({"port": 70_000}, ValueError, "port must be an int in 1..65535, got 70000"),
        ({"port": 0}, ValueError, "port must be an int in 1..65535, got 0"),
        ({"port": None}, ValueError, "port must be an int in 1..65535, got None"),
        ({"queue_size": 2.5}, TypeError, "queue_size must be an int, got 2.5"),
        ({"queue_size": "5"}, TypeError, "queue_size must be an int, got '5'"),
    ],
    ids=["port too big", "port 0", "no port", "fractional queue", "queue as text"],
)
async def test_bad_arguments_to_open_say_what_is_wrong(
    call: dict[str, object], error: type[Exception], message: str
) -> None:
    arguments: dict[str, object] = {"port": 9, **call}
    port = arguments.pop("port")
    with pytest.raises(error) as caught:
        await VoiceUdp.open("127.0.0.1", port, **arguments)  # type: ignore[arg-type]
    assert str(caught.value) == message


async def test_a_host_that_does_not_resolve_is_named() -> None:
    with pytest.raises(socket.gaierror, match=r"cannot resolve 'no-such-host\.invalid'"):
        await VoiceUdp.open("no-such-host.invalid", 9)


class _LoopWithoutReaders(asyncio.SelectorEventLoop):
    """A loop that cannot watch sockets, as Windows' default proactor loop (which
    cannot run here): asyncio's own transports still work on it."""

    def add_reader(self, *args: object) -> None:
        raise NotImplementedError


async def _media_round(udp: VoiceUdp, server: socket.socket) -> None:
    discovering = asyncio.ensure_future(udp.discover(9, timeout=PATIENCE))
    request, client = await asyncio.to_thread(server.recvfrom, 100)
    assert ip_discovery.parse_request(request) == 9
    for packet in (b"media 1", ip_discovery.response(9, *client), b"media 2"):
        server.sendto(packet, client)
    assert await discovering == client
    assert [await udp.receive(), await udp.receive()] == [b"media 1", b"media 2"]
    udp.send(b"rtp")
    assert await asyncio.to_thread(server.recv, 100) == b"rtp"


@pytest.mark.timeout(60)
def test_a_loop_that_cannot_watch_sockets_runs_the_socket_on_a_datagram_transport() -> None:
    async def scenario() -> None:
        with _raw_voice_server() as server:
            udp = await VoiceUdp.open("127.0.0.1", server.getsockname()[1])
            try:
                await _media_round(udp, server)
            finally:
                udp.close()
                udp.close()
            assert udp.closed
            with pytest.raises(ConnectionError, match="closed"):
                await asyncio.wait_for(udp.receive(), PATIENCE)

    loop = _LoopWithoutReaders()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


def test_discovery_options_are_checked() -> None:
    with pytest.raises(ValueError, match="attempts"):
        UdpDiscovery(attempts=0)


# -- the voice client against the fake gateway --------------------------------------


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[FakeVoiceGateway]:
    async with FakeVoiceGateway(heartbeat_interval=0.5, require_dave=False) as running:
        yield running


def rtp(ssrc: int, sequence: int) -> bytes:
    return struct.pack(">BBHII", 0x80, 0x78, sequence, sequence * 960, ssrc) + b"opus"


async def test_the_client_discovers_its_address_and_keeps_the_socket_for_media(
    gateway: FakeVoiceGateway, transport: str
) -> None:
    async with VoiceClient(
        gateway.url, CREDENTIALS, websocket=Websocket(transport=transport)
    ) as voice:
        await voice.wait_ready(PATIENCE)
        media = voice.media
        assert media is not None
        assert media.udp.external == media.udp.local  # loopback: seen as it is
        assert media.udp.remote == gateway.udp.address
        assert media.ssrc == voice.protocol.ready.ssrc  # type: ignore[union-attr]
        assert media.mode == "aead_aes256_gcm_rtpsize"
        assert len(media.secret_key) == 32
        assert "secret" not in repr(media)
        selected = gateway.session("session-1").selected
        assert selected is not None
        assert (selected["address"], selected["port"]) == media.udp.external
        for n in range(5):
            media.udp.send(rtp(media.ssrc, n))
        await eventually(lambda: gateway.udp.rtp_packets[media.ssrc] == 5, PATIENCE)
    assert media.udp.closed  # closing the client closes its UDP socket
    assert gateway.udp.discoveries == 1


async def test_a_resume_keeps_the_socket_and_a_new_session_makes_another(
    gateway: FakeVoiceGateway,
) -> None:
    fast = Backoff(base=0.01, cap=0.05, max_attempts=None)
    refresh = refreshing(gateway, CREDENTIALS)
    async with VoiceClient(
        gateway.url, CREDENTIALS, backoff=fast, refresh_credentials=refresh
    ) as voice:
        await voice.wait_ready(PATIENCE)
        first = voice.media
        assert first is not None
        await gateway.close_session("session-1", 4015, "crashed")
        await eventually(lambda: voice.stats.resumes == 1, PATIENCE)
        assert voice.media is not None
        assert voice.media.udp is first.udp
        await gateway.close_session("session-1", 4006, "invalid")
        await eventually(lambda: voice.stats.reconnects == 1, PATIENCE)
        await voice.wait_ready(PATIENCE)
        await eventually(lambda: voice.media is not None, PATIENCE)
        assert voice.media is not None
        assert voice.media.udp is not first.udp
        assert first.udp.closed


async def test_a_voice_server_whose_udp_never_answers_ends_with_the_reason(
    gateway: FakeVoiceGateway,
) -> None:
    gateway.udp.answer_discovery = False
    voice = VoiceClient(
        gateway.url,
        CREDENTIALS,
        discover=UdpDiscovery(timeout=0.05, attempts=2),
        backoff=Backoff(base=0.01, cap=0.02, max_attempts=2),
    )
    await voice.start()
    with pytest.raises(SessionClosedError):
        await voice.wait_ready(PATIENCE)
    outcome = await voice.wait_closed()
    assert "UDP IP discovery failed: no answer" in str(outcome)
    assert gateway.udp.discoveries >= 4  # 2 attempts per session, retried as new sessions


async def test_the_fake_answers_long_requests_and_counts_junk(gateway: FakeVoiceGateway) -> None:
    host, port = gateway.udp.address
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(host, port))
    try:
        transport.sendto(struct.pack(">HHI", 1, 70, 9) + bytes(70))  # 78 bytes, as hikari-wave
        answer = await asyncio.wait_for(answers.get(), PATIENCE)
        assert ip_discovery.parse_response(answer, 9) == transport.get_extra_info("sockname")[:2]
        transport.sendto(b"junk")
        await eventually(lambda: gateway.udp.junk == 1, PATIENCE)
    finally:
        transport.close()


async def test_ready_without_a_udp_socket_is_not_a_crash() -> None:
    """The sans-I/O protocol's own default still echoes READY (for tests without UDP)."""
    from wavegate.discord.voice_protocol import _no_discovery

    ready = Ready(ssrc=1, ip="127.0.0.1", port=9, modes=("aead_aes256_gcm_rtpsize",))
    assert await _no_discovery(ready) == ("127.0.0.1", 9)
