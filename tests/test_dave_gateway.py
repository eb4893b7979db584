"""DAVE end to end over real sockets: several VoiceClients (and a member we did not
write) in one channel of the fake voice gateway, real davey sessions, both transports.
Every member must end active at the gateway's epoch, with one epoch authenticator and
one privacy code, and decrypt what every other encrypts."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator

import davey
import pytest
import pytest_asyncio

from wavegate import Backoff, Websocket
from wavegate.discord.voice import DaveEvent, VoiceClient, VoiceCredentials
from wavegate.session import EventKind, SessionEvent
from wavegate.signals import SessionClosedError
from wavegate.testing.voice import FakeVoiceGateway

from .conftest import eventually
from .peers import ForeignDaveMember
from .voice_harness import refreshing

SERVER, CHANNEL = "1001", "3001"
FAST = Backoff(base=0.01, cap=0.05, max_attempts=None)
PATIENCE = 20.0
"""Seconds for a group to settle: several clients' MLS work on a busy 2-core machine."""


def credentials(user: int) -> VoiceCredentials:
    return VoiceCredentials(SERVER, str(user), f"session-{user}", f"token-{user}", CHANNEL)


class Channel:
    """The gateway and the clients a test put in its one channel."""

    def __init__(self, gateway: FakeVoiceGateway, transport: str) -> None:
        self.gateway = gateway
        self.transport = transport
        self.clients: dict[int, VoiceClient] = {}
        self.events: dict[int, list[SessionEvent]] = {}

    @property
    def dave(self) -> object:
        return self.gateway.dave_channel(SERVER)

    async def join(self, user: int, **options: object) -> VoiceClient:
        events: list[SessionEvent] = []
        options.setdefault("refresh_credentials", refreshing(self.gateway, credentials(user)))
        options.setdefault("backoff", FAST)
        client = VoiceClient(
            self.gateway.url,
            credentials(user),
            websocket=Websocket(transport=self.transport),
            on_event=events.append,
            **options,  # type: ignore[arg-type]
        )
        self.clients[user] = client
        self.events[user] = events
        await client.start()
        return client

    async def leave(self, user: int) -> None:
        await self.clients.pop(user).close()

    async def agree(self, *, others: tuple[int, ...] = ()) -> int:
        """Wait until every client is active at the gateway's epoch, then check they
        agree; returns the epoch. ``others``: members that are not our clients."""
        channel = self.gateway.dave_channel(SERVER)
        clients = list(self.clients.values())
        for client in clients:
            await client.wait_dave_ready(PATIENCE)

        def settled() -> bool:
            return sorted(channel.members) == sorted([*self.clients, *others]) and all(
                c.dave_state.active and c.dave_state.epoch == channel.epoch for c in clients
            )

        await eventually(settled, PATIENCE)
        sessions = [c.dave for c in clients]
        assert all(s is not None for s in sessions)
        assert len({s.get_epoch_authenticator() for s in sessions if s}) == 1
        assert len({c.voice_privacy_code for c in clients}) == 1
        for user, client in self.clients.items():
            frame = b"opus from %d" % user
            encrypted = client.encrypt_opus(frame)
            assert encrypted != frame
            for other_user, other in self.clients.items():
                if other_user != user:
                    assert other.decrypt(user, encrypted) == frame
        return channel.epoch

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[FakeVoiceGateway]:
    async with FakeVoiceGateway(heartbeat_interval=0.5, channel_ids={SERVER: CHANNEL}) as running:
        yield running


@pytest_asyncio.fixture
async def channel(gateway: FakeVoiceGateway, transport: str) -> AsyncIterator[Channel]:
    made = Channel(gateway, transport)
    yield made
    await made.close()


pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("members", [2, 3, 5])
async def test_members_joining_one_channel_agree(channel: Channel, members: int) -> None:
    for user in range(2001, 2001 + members):
        await channel.join(user)
    epoch = await channel.agree()
    # DAVE_READY comes once, when a member's group is first active: on a busy machine
    # the first members may get there before the last one joined (a later epoch, a
    # new code). Members active at the same epoch must show the same code, and those
    # active at the last epoch show the code they show now.
    codes: dict[int, set[str]] = {}
    for user, events in channel.events.items():
        ready = [e for e in events if e.kind is DaveEvent.READY]
        assert ready, f"{user} never reported DAVE_READY"
        codes.setdefault(ready[0].data["epoch"], set()).add(ready[0].data["privacy_code"])
        if ready[0].data["epoch"] == epoch:
            assert ready[0].data["privacy_code"] == channel.clients[user].voice_privacy_code
    assert all(len(seen) == 1 for seen in codes.values()), codes


async def test_a_later_join_and_a_leave_move_the_epoch(channel: Channel) -> None:
    for user in (2001, 2002, 2003):
        await channel.join(user)
    epoch = await channel.agree()
    await channel.join(2004)
    assert await channel.agree() > epoch
    epoch = await channel.agree()
    await channel.leave(2002)
    assert await channel.agree() > epoch
    epochs = [e.data["epoch"] for e in channel.events[2001] if e.kind is DaveEvent.EPOCH]
    assert epochs == sorted(epochs)


async def test_a_4015_resumes_and_stays_in_the_group_without_rekeying(channel: Channel) -> None:
    for user in (2001, 2002, 2003):
        await channel.join(user)
    epoch = await channel.agree()
    code = channel.clients[2001].voice_privacy_code
    won = channel.gateway.dave_channel(SERVER).stats.commits_won
    await channel.gateway.close_session("session-2002", 4015, "voice server crashed")
    await eventually(lambda: any(e.kind is EventKind.RESUMED for e in channel.events[2002]))
    assert await channel.agree() == epoch
    assert channel.clients[2002].voice_privacy_code == code
    assert channel.gateway.dave_channel(SERVER).stats.commits_won == won
    assert channel.clients[2002].dave_state.recoveries == 0
    await channel.join(2004)  # the resumed member still takes part in what follows
    assert await channel.agree() == epoch + 1


async def test_a_4006_starts_a_new_session_that_rejoins_the_group(channel: Channel) -> None:
    for user in (2001, 2002, 2003):
        await channel.join(user)
    epoch = await channel.agree()
    await channel.gateway.close_session("session-2002", 4006, "session no longer valid")
    await eventually(lambda: channel.gateway.session("session-2002").generation == 1, PATIENCE)
    assert await channel.agree() > epoch
    ready = [e for e in channel.events[2002] if e.kind is EventKind.READY]
    assert len(ready) == 2


@pytest.mark.parametrize("fault", ["corrupt commit", "stale commit"])
async def test_an_invalid_commit_is_flagged_and_the_group_recovers(
    channel: Channel, fault: str
) -> None:
    for user in (2001, 2002, 2003):
        await channel.join(user)
    await channel.agree()
    if fault == "corrupt commit":
        channel.gateway.corrupt_next_commit("session-2001")
        await channel.join(2004)
    else:
        channel.gateway.send_stale_commit("session-2001")
    await eventually(lambda: channel.clients[2001].dave_state.recoveries == 1, PATIENCE)
    await channel.agree()
    errors = [e for e in channel.events[2001] if e.kind is DaveEvent.ERROR]
    assert [e.data["recovery"] for e in errors] == ["reinit"]
    assert channel.gateway.dave_channel(SERVER).stats.invalid_reports == 1


async def test_a_downgrade_to_version_0_and_back(gateway: FakeVoiceGateway, transport: str) -> None:
    async with FakeVoiceGateway(
        heartbeat_interval=0.5, require_dave=False, channel_ids={SERVER: CHANNEL}
    ) as lenient:
        channel = Channel(lenient, transport)
        try:
            for user in (2001, 2002):
                await channel.join(user)
            await channel.agree()
            legacy = await channel.join(2003, max_dave_protocol_version=0)
            await legacy.wait_ready(PATIENCE)
            others = [channel.clients[2001], channel.clients[2002]]
            await eventually(lambda: all(c.dave is None for c in others), PATIENCE)
            assert others[0].encrypt_opus(b"opus") == b"opus"  # DAVE off: as it is
            await channel.leave(2003)
            await channel.agree()

            # The group is active at op 24's version as soon as it is welcomed; the
            # transition that follows executes a moment later.
            def versions() -> list[int]:
                events = channel.events[2001]
                return [e.data["version"] for e in events if e.kind is DaveEvent.TRANSITION]

            await eventually(lambda: versions()[-2:] == [0, 1], PATIENCE)
        finally:
            await channel.close()


async def test_without_dave_the_gateway_closes_with_4017_and_the_client_stops(
    gateway: FakeVoiceGateway, transport: str
) -> None:
    client = VoiceClient(
        gateway.url,
        credentials(2001),
        max_dave_protocol_version=0,
        websocket=Websocket(transport=transport),
        backoff=FAST,
    )
    await client.start()
    outcome = await asyncio.wait_for(client.wait_closed(), PATIENCE)
    assert (outcome.reason, outcome.code) == ("disconnect", 4017)
    assert "requires DAVE" in str(outcome)
    assert "max_dave_protocol_version=0" in outcome.explanation
    assert gateway.identifies == 0  # refused at IDENTIFY, once: no loop
    assert client.stats.connects <= 1
    with pytest.raises(SessionClosedError):
        await client.wait_dave_ready(1)


async def test_a_transition_that_never_executes_leaves_the_group_usable(
    channel: Channel,
) -> None:
    channel.gateway.hold_transitions(SERVER)
    for user in (2001, 2002):
        await channel.join(user)
    await channel.agree()  # MLS moved on at the commit: media works meanwhile
    assert all(c.dave_state.pending for c in channel.clients.values())
    channel.gateway.hold_transitions(SERVER, False)
    await eventually(lambda: not any(c.dave_state.pending for c in channel.clients.values()))
    assert any(e.kind is DaveEvent.TRANSITION for e in channel.events[2001])


async def test_a_member_that_never_sends_its_key_package_is_left_out(channel: Channel) -> None:
    channel.gateway.ignore_key_packages(SERVER, "2003")  # before it even connects
    await channel.join(2003)
    await channel.clients[2003].wait_ready(PATIENCE)
    silent = channel.clients.pop(2003)
    channel.events.pop(2003)
    for user in (2001, 2002):
        await channel.join(user)
    await channel.agree()
    with pytest.raises(asyncio.TimeoutError, match="waiting to be welcomed"):
        await silent.wait_dave_ready(0.5)
    await silent.close()


async def test_a_member_we_did_not_write_agrees_with_ours(channel: Channel) -> None:
    for user in (2001, 2002):
        await channel.join(user)
    foreign = ForeignDaveMember(channel.gateway.url, SERVER, 2999, int(CHANNEL))
    async with foreign:
        await channel.agree(others=(2999,))

        def foreign_agrees() -> bool:
            session = foreign.session
            mine = channel.clients[2001].dave
            return bool(
                session is not None
                and session.ready
                and mine is not None
                and session.get_epoch_authenticator() == mine.get_epoch_authenticator()
            )

        await eventually(foreign_agrees, PATIENCE)
        mine = channel.clients[2001]
        assert foreign.session.voice_privacy_code == mine.voice_privacy_code
        frame = foreign.session.encrypt_opus(b"opus from a stranger")
        assert mine.decrypt(2999, frame) == b"opus from a stranger"
        audio = davey.MediaType.audio
        assert foreign.session.decrypt(2001, audio, mine.encrypt_opus(b"ours")) == b"ours"


async def test_members_that_never_commit_hold_a_joiner_back_only_until_a_timeout(
    channel: Channel,
) -> None:
    dave = channel.gateway.dave_channel(SERVER)
    channel.gateway.transition_timeout = 1.0  # also the longest a key package is held
    strangers = [
        ForeignDaveMember(channel.gateway.url, SERVER, user, int(CHANNEL), commits=False)
        for user in (2997, 2998, 2999)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for stranger in strangers[:2]:
            await stack.enter_async_context(stranger)
        await eventually(lambda: dave.stats.proposals == 2, PATIENCE)
        # Their Adds are out to each other, never to be committed: the third
        # stranger's key package is held, until the hold times out.
        await stack.enter_async_context(strangers[2])
        await eventually(lambda: dave.held == [2999] or dave.stats.holds_timed_out > 0, PATIENCE)
        await eventually(lambda: dave.stats.holds_timed_out == 1, PATIENCE)
        assert dave.stats.proposals == 3
        assert dave.held == []
        # A member that commits joins: it commits all three Adds at once.
        first = await channel.join(2001)
        await first.wait_dave_ready(PATIENCE)
        assert first.dave is not None
        mine = first.dave.get_epoch_authenticator()

        def strangers_agree() -> bool:
            sessions = [s.session for s in strangers]
            return all(s is not None and s.ready for s in sessions) and all(
                s.get_epoch_authenticator() == mine for s in sessions
            )

        await eventually(strangers_agree, PATIENCE)
        assert dave.stats.commits_won == 1


async def test_wait_dave_ready_says_why_it_timed_out(channel: Channel) -> None:
    client = await channel.join(2001)  # alone: no group to be welcomed into
    await client.wait_ready(PATIENCE)
    with pytest.raises(asyncio.TimeoutError, match="alone in the channel"):
        await client.wait_dave_ready(0.2)
    assert client.dave is not None  # DAVE is on; the group is not active yet
    assert client.voice_privacy_code is None


async def test_a_wrong_channel_id_is_named_in_the_timeout(channel: Channel) -> None:
    """DAVE's MLS group id is the voice channel's id: clients told another channel
    refuse every proposal (no one can commit), and say which credential to fix."""
    strays = []
    for user in (2001, 2002):
        stray = VoiceClient(
            channel.gateway.url,
            VoiceCredentials(SERVER, str(user), f"session-{user}", "token", "3999"),
            websocket=Websocket(transport=channel.transport),
            backoff=FAST,
        )
        channel.clients[user] = stray
        strays.append(stray)
        await stray.start()
    await eventually(lambda: all(s.dave_state.last_error for s in strays), PATIENCE)
    for stray in strays:
        with pytest.raises(asyncio.TimeoutError, match=r"VoiceCredentials\.channel_id"):
            await stray.wait_dave_ready(0.1)
        assert "WrongGroupId" in str(stray.dave_state.last_error)


async def test_a_move_to_another_channel_joins_that_channels_group(
    channel: Channel, transport: str
) -> None:
    """4014 then a move (VOICE_SERVER_UPDATE) into another channel: DAVE's group id
    changes with the channel."""
    mover = await channel.join(2001, move_grace=30.0)
    await channel.join(2002)
    await channel.agree()
    async with FakeVoiceGateway(heartbeat_interval=0.5, channel_ids={SERVER: "3002"}) as other:
        there = Channel(other, transport)
        try:
            await there.join(2003)
            await channel.gateway.close_session("session-2001", 4014, "moved")
            await eventually(lambda: mover.state.value == "awaiting_move", PATIENCE)
            mover.move_to(other.url, "token-new", channel_id="3002")
            there.clients[2001] = channel.clients.pop(2001)
            assert mover.dave_state.channel_id == 3002
            assert mover.protocol.credentials.channel_id == "3002"
            await there.agree()
        finally:
            await there.close()


async def test_wait_dave_ready_returns_at_once_when_the_call_has_no_dave(
    transport: str,
) -> None:
    async with FakeVoiceGateway(heartbeat_interval=0.5, require_dave=False) as lenient:
        client = VoiceClient(
            lenient.url,
            VoiceCredentials(SERVER, "2001", "session-2001", "token", SERVER),
            websocket=Websocket(transport=transport),
            max_dave_protocol_version=0,
        )
        async with client:
            await client.wait_ready(PATIENCE)
            await client.wait_dave_ready(PATIENCE)  # version 0: nothing to wait for
            assert client.dave is None
            assert client.encrypt_opus(b"opus") == b"opus"


def test_dave_needs_the_channel_id_and_a_version_davey_speaks() -> None:
    no_channel = VoiceCredentials(SERVER, "2001", "session", "token")
    with pytest.raises(ValueError, match=r"channel_id is required for DAVE"):
        VoiceClient("ws://127.0.0.1:1/?v=8", no_channel)
    VoiceClient("ws://127.0.0.1:1/?v=8", no_channel, max_dave_protocol_version=0)
    with pytest.raises(ValueError, match="max_dave_protocol_version must be 0"):
        VoiceClient("ws://127.0.0.1:1/?v=8", credentials(2001), max_dave_protocol_version=2)


@pytest.mark.parametrize("bad", ["token-SECRET-VALUE", "18446744073709551616", "", "12a"], ids=str)
def test_bad_ids_are_refused_without_showing_them(bad: str) -> None:
    with pytest.raises(ValueError, match=r"VoiceCredentials\.server_id") as raised:
        VoiceCredentials(bad, "2001", "session", "token", CHANNEL)
    if bad:
        assert bad not in str(raised.value)


async def test_the_gateway_leaves_no_timer_behind() -> None:
    async with FakeVoiceGateway(heartbeat_interval=0.5, channel_ids={SERVER: CHANNEL}) as gw:
        clients = [
            VoiceClient(gw.url, credentials(user), backoff=FAST, websocket=Websocket())
            for user in (2001, 2002)
        ]
        for client in clients:
            await client.start()
        for client in clients:
            await client.wait_dave_ready(PATIENCE)
    # Stopping dropped both members (each drop used to arm a 10 s leave timer).
    assert gw._timers == set()
    for client in clients:
        await client.close()


def test_without_davey_the_core_imports_and_the_voice_client_names_the_extra() -> None:
    script = (
        "import sys; sys.modules['davey'] = None\n"
        "import wavegate, wavegate.discord.payloads\n"
        "try:\n"
        "    import wavegate.discord.voice\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'wavegate[voice]'" in result.stdout


class _Highest:
    """Backoff jitter at its ceiling: the wait is exactly the backoff's delay."""

    def uniform(self, low: float, high: float) -> float:
        return high


async def test_after_a_4006_the_old_group_is_not_reported_during_the_backoff(
    channel: Channel,
) -> None:
    await channel.join(2001)
    slow = Backoff(base=30.0, cap=30.0, max_attempts=None)  # a long wait before rejoining
    client = await channel.join(2002, backoff=slow, random_source=_Highest())
    await channel.agree()
    await channel.gateway.close_session("session-2002", 4006, "session no longer valid")
    await eventually(lambda: client.state.value == "waiting", PATIENCE)
    assert client.dave is None
    assert not client.dave_state.active
    with pytest.raises(TimeoutError):
        await client.wait_dave_ready(0.05)


@pytest.mark.parametrize("speaker", [None, "abc", -1, True])
def test_decrypt_says_what_a_user_id_must_be(speaker: object) -> None:
    voice = VoiceClient("ws://127.0.0.1:1/?v=8", credentials(2001))
    with pytest.raises(ValueError, match="speaker's user id"):
        voice.decrypt(speaker, b"frame")  # type: ignore[arg-type]


async def test_wait_ready_says_why_it_timed_out() -> None:
    voice = VoiceClient("ws://127.0.0.1:9/?v=8", credentials(2001), backoff=FAST)
    async with voice:
        with pytest.raises(TimeoutError, match=r"last connection ended: .*refused") as raised:
            await voice.wait_ready(0.5)
    assert isinstance(raised.value, asyncio.TimeoutError)  # both names, on every Python


async def test_make_bench_dave_runs_every_group() -> None:
    # It stopped at its second group once: every member had the same token, which the
    # gateway refuses (4006) once a session with it has ended.
    from benchmarks.dave import measure

    results = await measure(rounds=2, sizes=[2])
    assert results["2 members"]["member READY -> active"]["samples"] == 4
    assert results["5th joins 4"]["start -> all active at new epoch"]["samples"] == 2


async def test_dave_channel_takes_the_server_id_as_a_str() -> None:
    async with FakeVoiceGateway(channel_ids={SERVER: CHANNEL}) as gateway:
        with pytest.raises(TypeError, match="server_id is a str"):
            gateway.dave_channel(int(SERVER))  # type: ignore[arg-type]
        assert gateway.channels == {}
