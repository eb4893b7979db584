"""An in-memory voice channel for DAVE: the fake gateway's :class:`DaveChannel` and real
davey sessions behind :class:`DaveState` clients, with messages in per-user FIFO queues that
a test (or hypothesis) delivers in any interleaving. No sockets: the socket tests are
in test_dave_gateway.py; this one explores orders the network rarely produces."""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from wavegate.discord.dave import DaveState, is_dave_message
from wavegate.discord.payloads import parse_binary, parse_json
from wavegate.protocol import Notify, Send
from wavegate.testing.dave import ArmHoldTimeout, ArmTimeout, DaveChannel, Output

CHANNEL = 1_000_000_000_000_000_001


@dataclass
class Member:
    dave: DaveState
    inbox: deque[object] = field(default_factory=deque)
    """Server messages on their way to the client (parsed as the protocol would)."""
    outbox: deque[dict[str, object] | bytes] = field(default_factory=deque)
    """Client messages on their way to the gateway."""
    events: list[Notify] = field(default_factory=list)


class Network:
    """A channel and its members; :meth:`step` moves one message."""

    def __init__(self, *, require_dave: bool = True, seed: int = 0) -> None:
        self.channel = DaveChannel(CHANNEL, require_dave=require_dave)
        self.members: dict[int, Member] = {}
        self.timeouts: list[int] = []
        """Transitions whose timeout was armed."""
        self.hold_timeouts: list[int] = []
        """Holds on key packages whose timeout was armed."""
        self.rng = random.Random(seed)
        self._seq = 0

    def join(self, user: int, *, dave: bool = True) -> Member:
        member = Member(DaveState(user, CHANNEL))
        self.members[user] = member
        version = self.channel.version_for(dave=dave)
        member.outbox.extend(self._client_outputs(member, member.dave.start(version)))
        self._server(self.channel.join(user, dave=dave))
        return member

    def leave(self, user: int) -> None:
        del self.members[user]
        self._server(self.channel.leave(user))

    # -- moving messages -------------------------------------------------------------

    def _server(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, ArmTimeout):
                self.timeouts.append(output.transition_id)
                continue
            if isinstance(output, ArmHoldTimeout):
                self.hold_timeouts.append(output.hold_id)
                continue
            member = self.members.get(output.user_id)
            if member is None:
                continue
            self._seq = (self._seq + 1) % 65536
            if isinstance(output.data, bytes):
                frame = struct.pack(">HB", self._seq, output.op) + output.data
                member.inbox.append(parse_binary(frame))
            else:
                member.inbox.append(parse_json({"op": output.op, "d": output.data}))

    @staticmethod
    def _client_outputs(
        member: Member, outputs: Sequence[object]
    ) -> list[dict[str, object] | bytes]:
        sent: list[dict[str, object] | bytes] = []
        for output in outputs:
            if isinstance(output, Send):
                sent.append(output.payload)
            elif isinstance(output, Notify):
                member.events.append(output)
        return sent

    def deliver_to_client(self, user: int) -> None:
        member = self.members[user]
        message = member.inbox.popleft()
        if is_dave_message(message):
            outputs: list[object] = list(member.dave.receive(message))
        else:
            member.dave.observe(message)
            outputs = []
        member.outbox.extend(self._client_outputs(member, outputs))

    def deliver_to_server(self, user: int) -> None:
        payload = self.members[user].outbox.popleft()
        if isinstance(payload, bytes):
            op, body = payload[0], payload[1:]
            if op == 26:
                self._server(self.channel.key_package(user, body))
            elif op == 28:
                self._server(self.channel.commit_welcome(user, body))
            return
        data = payload["d"]
        assert isinstance(data, dict)
        if payload["op"] == 23:
            self._server(self.channel.transition_ready(user, data["transition_id"]))
        elif payload["op"] == 31:
            self._server(self.channel.invalid_commit_welcome(user, data["transition_id"]))

    def step(self) -> bool:
        """Move one message (chosen at random); ``False`` if none is in flight."""
        queues = [(u, True) for u, m in self.members.items() if m.inbox]
        queues += [(u, False) for u, m in self.members.items() if m.outbox]
        if not queues:
            return False
        user, to_client = self.rng.choice(queues)
        if to_client:
            self.deliver_to_client(user)
        else:
            self.deliver_to_server(user)
        return True

    def settle(self, limit: int = 20_000, *, holds: bool = False) -> None:
        """Move messages until none is in flight, then let pending transitions time
        out (and holds on key packages, with ``holds``: without, a stall that only the
        hold's timeout would end fails the test), until nothing moves."""
        for _ in range(limit):
            if self.step():
                continue
            if self.timeouts:
                self._server(self.channel.transition_timed_out(self.timeouts.pop(0)))
            elif self.hold_timeouts and holds:
                self._server(self.channel.hold_timed_out(self.hold_timeouts.pop(0)))
            else:
                return
        raise AssertionError(f"no quiescence after {limit} steps")

    # -- what a test checks ----------------------------------------------------------

    def dave_members(self) -> dict[int, Member]:
        return {u: m for u, m in self.members.items() if m.dave.session is not None}

    def assert_agree(self) -> None:
        """Every DAVE member is active at the channel's epoch, with one authenticator
        and one privacy code, at the leaf the gateway believes, and each decrypts what
        every other encrypts."""
        members = self.dave_members()
        assert len(members) >= 2, "agreement needs two members"
        for user, member in members.items():
            assert member.dave.active, f"{user}: {member.dave.status()}"
            assert member.dave.epoch == self.channel.epoch
            assert member.dave.session is not None
            assert member.dave.session.own_leaf_index == self.channel.members[user]
        sessions = [m.dave.session for m in members.values()]
        assert len({s.get_epoch_authenticator() for s in sessions if s}) == 1
        assert len({m.dave.privacy_code for m in members.values()}) == 1
        assert sorted(self.channel.members) == sorted(members)
        for sender, member in members.items():
            frame = b"opus frame from %d" % sender
            encrypted = member.dave.encrypt_opus(frame)
            assert encrypted != frame
            for receiver, other in members.items():
                if receiver != sender:
                    assert other.dave.decrypt(sender, encrypted) == frame
