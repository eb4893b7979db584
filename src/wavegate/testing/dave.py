"""The DAVE server side of one voice channel: a pure state machine (no I/O, no clock).

The fake voice gateway feeds it what clients do (join, leave, key packages, commits,
transition readiness, invalid-commit reports) and sends what it returns. It plays
what the real voice gateway plays in DAVE (the protocol whitepaper, "Group Key
Exchange"): MLS's delivery service and external sender. It never holds group
secrets; it signs Add and Remove proposals, picks the first valid commit of each
epoch, announces it (op 29) to the members and welcomes (op 30) the joiners, and runs
transitions (ops 21/22/23) with a timeout.

How it decides, in one place (:meth:`DaveChannel._reconcile`): the group should
hold every present DAVE user whose MLS state is sound. After every change it proposes
what is missing (an Add for each key package waiting, a Remove for each member that
left or flagged an invalid commit), and resets the group when at most one sound
member would remain (the "sole member reset"). Key packages that come while Adds are
out to committers wait for that commit (a hold, at most one timeout long), then go
out together: a commit must reference every proposal of its epoch (whitepaper, "Voice
Gateway Commit Validity"), so each Add proposed at once would make every commit in
flight stale, and the gateway may delay proposals to batch them ("Proposal
Handling"). Before a group exists, the first two users' Adds go out to each other at
once, as in "Initial Group Creation"; later key packages may wait.

    channel = DaveChannel(channel_id=1234)
    outputs = channel.join(1001, dave=True)        # ops 11 and 25 ...
    outputs += channel.key_package(1001, body)     # ... proposals as members come
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import mls

OP_CLIENTS_CONNECT = 11
OP_CLIENT_DISCONNECT = 13
OP_PREPARE_TRANSITION = 21
OP_EXECUTE_TRANSITION = 22
OP_PREPARE_EPOCH = 24
OP_EXTERNAL_SENDER = 25
OP_PROPOSALS = 27
OP_ANNOUNCE_COMMIT = 29
OP_WELCOME = 30
_APPEND, _REVOKE = 0, 1


@dataclass(frozen=True, slots=True)
class ToUser:
    """Send ``user_id`` op ``op``: a JSON message with ``data`` as ``d`` (a dict), or a
    binary frame with ``data`` as its body (bytes)."""

    user_id: int
    op: int
    data: dict[str, Any] | bytes


@dataclass(frozen=True, slots=True)
class ArmTimeout:
    """Call :meth:`DaveChannel.transition_timed_out` with this id after the timeout."""

    transition_id: int


@dataclass(frozen=True, slots=True)
class ArmHoldTimeout:
    """Call :meth:`DaveChannel.hold_timed_out` with this id after the timeout."""

    hold_id: int


Output = ToUser | ArmTimeout | ArmHoldTimeout


@dataclass
class _Proposal:
    message: bytes
    ref: bytes
    user: int
    key_package: bytes | None = None
    """For an Add."""
    leaf: int | None = None
    """For a Remove."""
    recipients: set[int] = field(default_factory=set)


@dataclass
class _Transition:
    version: int
    participants: set[int]
    waiting: set[int]


REJECTIONS_KEPT = 100
"""How many rejection reasons :attr:`DaveStats.rejections` keeps."""


@dataclass
class DaveStats:
    """What the channel did (for tests and the demo)."""

    proposals: int = 0
    revoked: int = 0
    commits_won: int = 0
    commits_rejected: int = 0
    """Invalid (wrong group, sender or proposals), or for an epoch already decided."""
    key_packages_rejected: int = 0
    invalid_reports: int = 0
    """op 31 received."""
    resets: int = 0
    """Sole member resets and group re-creations."""
    transitions_executed: int = 0
    transitions_timed_out: int = 0
    holds_timed_out: int = 0
    """Holds whose timeout came first: the key packages they held were proposed though
    nobody had committed the Adds out before them."""
    rejections: deque[str] = field(default_factory=lambda: deque(maxlen=REJECTIONS_KEPT))
    """Why the last :data:`REJECTIONS_KEPT` rejected commits and key packages were
    rejected (the counts above count them all): a long-running ``wavegate serve`` must
    not grow with every member's mistake."""


class DaveChannel:
    """The DAVE state of one voice channel, as the voice gateway sees it.

    Args:
        channel_id: the MLS group id (the channel's snowflake).
        require_dave: a client without DAVE may not join (the gateway closes it with
            4017); otherwise it downgrades the channel to protocol version 0 until it
            leaves.

    Attributes:
        version: the channel's DAVE protocol version (0 while downgraded).
        epoch: the group's epoch (0: no group established yet).
        members: user id to leaf index, for the established group.
        hold_transitions: when true, no transition executes (a stuck gateway).
        ignored_key_packages: users whose key packages are dropped (as if never sent).
        stats: counters.
    """

    def __init__(self, channel_id: int, *, require_dave: bool = True) -> None:
        self.channel_id = channel_id
        self.require_dave = require_dave
        self.sender = mls.ExternalSender()
        self.version = 1
        self.epoch = 0
        self.members: dict[int, int] = {}
        self.hold_transitions = False
        self.ignored_key_packages: set[int] = set()
        self.stats = DaveStats()
        self._present: dict[int, bool] = {}
        """Users in the channel, and whether each speaks DAVE."""
        self._sender_known: set[int] = set()
        self._key_packages: dict[int, bytes] = {}
        """Key packages of users waiting to be added."""
        self._last_key_package: dict[int, bytes] = {}
        self._unsound: set[int] = set()
        """Members whose MLS state is gone (they flagged a commit or re-keyed)."""
        self._proposals: list[_Proposal] = []
        self._transitions: dict[int, _Transition] = {}
        self._next_tid = 0
        self._last_commit: tuple[int, bytes] | None = None
        self._corrupt_for: set[int] = set()
        self._hold: int | None = None
        """The id of this epoch's hold on key packages, once one is armed."""
        self._hold_expired = False
        """It timed out: key packages are proposed at once until the epoch ends."""
        self._next_hold = 0

    def __repr__(self) -> str:
        return (
            f"<DaveChannel {self.channel_id} v{self.version} epoch={self.epoch} "
            f"members={sorted(self.members)}>"
        )

    @property
    def established(self) -> bool:
        """Whether a group exists (a first commit was announced)."""
        return bool(self.members)

    @property
    def present(self) -> list[int]:
        """Users in the channel."""
        return list(self._present)

    @property
    def held(self) -> list[int]:
        """Users whose key packages wait, unproposed, for the Adds out to be committed
        (or for the hold's timeout)."""
        return [user for user, _ in self._waiting()] if self._hold is not None else []

    def pending_transitions(self) -> list[int]:
        """Transitions announced and not executed yet."""
        return list(self._transitions)

    # -- presence ----------------------------------------------------------------------

    def join(self, user: int, *, dave: bool) -> list[Output]:
        """``user`` completed SELECT_PROTOCOL (its SESSION_DESCRIPTION just went out with
        :meth:`version_for`); ``dave``: it offered DAVE."""
        out: list[Output] = []
        if user in self._present:
            out += self.leave(user)
        others = list(self._present)
        self._present[user] = dave
        if others:
            out.append(ToUser(user, OP_CLIENTS_CONNECT, {"user_ids": [str(u) for u in others]}))
        out += [ToUser(u, OP_CLIENTS_CONNECT, {"user_ids": [str(user)]}) for u in others]
        if not dave:
            return out + (self._downgrade() if self.version else [])
        if self.version:
            out += self._send_sender([user])
        return out + self._reconcile()

    def version_for(self, *, dave: bool) -> int:
        """The ``dave_protocol_version`` for a joiner's SESSION_DESCRIPTION."""
        return self.version if dave else 0

    def leave(self, user: int) -> list[Output]:
        """``user`` left the channel (or its session ended for good)."""
        if user not in self._present:
            return []
        dave = self._present.pop(user)
        self._sender_known.discard(user)
        self._key_packages.pop(user, None)
        self._last_key_package.pop(user, None)
        out: list[Output] = [
            ToUser(u, OP_CLIENT_DISCONNECT, {"user_id": str(user)}) for u in self._present
        ]
        out += self._withdraw_add(user)
        for transition in self._transitions.values():
            transition.participants.discard(user)
            transition.waiting.discard(user)
        out += self._execute_ready()
        if not dave and self.version == 0 and all(self._present.values()):
            return out + self._upgrade()
        return out + self._reconcile()

    # -- what clients send -------------------------------------------------------------

    def key_package(self, user: int, body: bytes) -> list[Output]:
        """op 26: ``user``'s key package (a new one replaces the last)."""
        if user not in self._present or not self.version or user in self.ignored_key_packages:
            return []
        if self._last_key_package.get(user) == body:
            return []  # sent again after a resume: nothing changes
        try:
            owner = mls.key_package_user(body)
        except mls.MLSFormatError as exc:
            return self._reject_key_package(f"user {user}: unreadable key package ({exc})")
        if owner != user:
            return self._reject_key_package(f"user {user}: key package of user {owner}")
        out = self._withdraw_add(user)
        if user in self.members:
            self._unsound.add(user)  # a new key package: its old state is gone
        self._key_packages[user] = self._last_key_package[user] = body
        return out + self._reconcile()

    def commit_welcome(self, user: int, body: bytes) -> list[Output]:
        """op 28: ``user``'s commit, and the welcome after it. The first valid commit of
        an epoch wins; any other is dropped (``stats.rejections`` says why)."""
        try:
            commit = mls.read_commit(body)
        except mls.MLSFormatError as exc:
            return self._reject_commit(f"user {user}: unreadable commit ({exc})")
        problem = self._commit_problem(user, commit)
        if problem:
            return self._reject_commit(f"user {user}, epoch {commit.epoch}: {problem}")
        return self._announce(user, commit)

    def transition_ready(self, user: int, transition_id: int) -> list[Output]:
        """op 23: ``user`` is ready for the transition."""
        transition = self._transitions.get(transition_id)
        if transition is not None:
            transition.waiting.discard(user)
        return self._execute_ready()

    def invalid_commit_welcome(self, user: int, transition_id: int) -> list[Output]:
        """op 31: ``user`` could not process a commit or welcome; it starts over (a new
        key package follows), so it is removed and added again."""
        self.stats.invalid_reports += 1
        transition = self._transitions.get(transition_id)
        if transition is not None:
            transition.waiting.discard(user)
        if user in self.members:
            self._unsound.add(user)
        return self._execute_ready() + self._reconcile()

    def hold_timed_out(self, hold_id: int) -> list[Output]:
        """The hold's timeout passed: propose the key packages it held, though the Adds
        out before them were not committed (their committers may never commit)."""
        if hold_id != self._hold or self._hold_expired:
            return []
        self._hold_expired = True
        self.stats.holds_timed_out += 1
        return self._reconcile()

    def transition_timed_out(self, transition_id: int) -> list[Output]:
        """The transition's timeout passed: execute it, ready or not."""
        if transition_id not in self._transitions or self.hold_transitions:
            return []
        self.stats.transitions_timed_out += 1
        return self._execute(transition_id)

    # -- faults ------------------------------------------------------------------------

    def corrupt_next_commit(self, user: int) -> None:
        """Corrupt the next commit (or welcome) announced to ``user``."""
        self._corrupt_for.add(user)

    def stale_commit(self, user: int) -> list[Output]:
        """Announce the previous epoch's commit again to ``user`` (a state gone stale)."""
        if self._last_commit is None:
            return []
        tid, message = self._last_commit
        return [ToUser(user, OP_ANNOUNCE_COMMIT, struct.pack(">H", tid) + message)]

    def release_transitions(self) -> list[Output]:
        """Stop holding transitions; execute those that waited."""
        self.hold_transitions = False
        out: list[Output] = []
        for tid in list(self._transitions):
            out += self._execute(tid)
        return out

    # -- the group ---------------------------------------------------------------------

    def _reconcile(self) -> list[Output]:
        """Propose what the group lacks; reset it if at most one sound member is left."""
        if not self.version:
            return []
        sound = [u for u in self.members if u not in self._unsound and u in self._present]
        gone = [u for u in self.members if u not in sound]
        if self.established and len(sound) <= 1 and (gone or not sound):
            return self._reset_group(sound)
        removals = [u for u in gone if self.members[u] not in self._proposed_removals()]
        out: list[Output] = []
        if removals and any(p.key_package for p in self._proposals):
            # davey 0.1.7 commits a Remove that comes after an Add without the Add's
            # welcome, which the joiner needs: revoke both, propose them together.
            out += self._revoke(list(self._proposals))
            removals = gone
        proposals = [self._propose(u, mls.remove(self.members[u]), leaf=True) for u in removals]
        committers = sound if self.established else None
        adds, held = self._adds(committers)
        return out + held + self._deliver(committers, proposals + adds)

    def _proposed_removals(self) -> set[int]:
        return {p.leaf for p in self._proposals if p.leaf is not None}

    def _waiting(self) -> list[tuple[int, bytes]]:
        """Users whose key packages no Add of this epoch carries yet, and those."""
        proposed = {p.key_package for p in self._proposals if p.key_package}
        return [(u, k) for u, k in self._key_packages.items() if k not in proposed]

    def _adds(self, committers: list[int] | None) -> tuple[list[_Proposal], list[Output]]:
        """Adds for the key packages waiting; or none while Adds are out (a hold), and
        the hold's timer when it starts."""
        waiting = self._waiting()
        users = {u for u, _ in waiting}
        if not waiting or self._hold_expired or not self._adds_out(committers, users):
            self._hold, self._hold_expired = None, False  # its timer, if pending, ends
            return [self._propose(u, mls.add(k), k) for u, k in waiting], []
        if self._hold is not None:
            return [], []
        self._next_hold += 1
        self._hold = self._next_hold
        return [], [ArmHoldTimeout(self._hold)]

    def _adds_out(self, committers: list[int] | None, waiting: set[int]) -> bool:
        """Whether an Add of this epoch reached someone, other than the users whose key
        packages wait, whose commit of it could win (before a group exists: a first
        commit from a user with a key package). So before a group exists the first two
        users' Adds go out to each other at once, as in the whitepaper's "Initial Group
        Creation": a key package is not held back for an Add that only its own user
        could commit."""
        if committers is None:
            committers = [u for u in self._dave_users() if u in self._key_packages]
        can_commit = set(committers) - waiting
        return any(p.key_package and p.recipients & can_commit for p in self._proposals)

    def _new_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._proposals.clear()
        self._hold = None
        self._hold_expired = False

    def _propose(
        self, user: int, proposal: bytes, key_package: bytes | None = None, *, leaf: bool = False
    ) -> _Proposal:
        message = self.sender.proposal(self.channel_id, self.epoch, proposal)
        self.stats.proposals += 1
        return _Proposal(
            message,
            mls.proposal_ref(message),
            user,
            key_package=key_package,
            leaf=self.members[user] if leaf else None,
        )

    def _deliver(self, committers: list[int] | None, new: list[_Proposal]) -> list[Output]:
        """Send each committer the proposals it lacks, in one op 27. Before a group
        exists every present DAVE user is a would-be committer, except for its own Add."""
        self._proposals += new
        out: list[Output] = []
        users = committers if committers is not None else self._dave_users()
        for user in users:
            missing = [
                p
                for p in self._proposals
                if user not in p.recipients and (committers is not None or p.user != user)
            ]
            if not missing:
                continue
            for proposal in missing:
                proposal.recipients.add(user)
            vector = mls.append_vector([p.message for p in missing])
            out.append(ToUser(user, OP_PROPOSALS, bytes((_APPEND,)) + vector))
        return out

    def _withdraw_add(self, user: int) -> list[Output]:
        """Take back ``user``'s pending Add (it left, or sent a new key package): by
        revoking every pending proposal, for the callers to propose afresh what is still
        wanted (``_reconcile``). Revoking only that Add is not enough: davey 0.1.7
        answers such a revoke, when other Adds stay pending, with a commit that lacks
        the welcome they need, which no joiner can use."""
        if not any(p.user == user and p.key_package for p in self._proposals):
            return []
        return self._revoke(list(self._proposals))

    def _revoke(self, proposals: Iterable[_Proposal]) -> list[Output]:
        revoked = list(proposals)
        out: list[Output] = []
        for proposal in revoked:
            self._proposals.remove(proposal)
            self.stats.revoked += 1
            for user in proposal.recipients:
                vector = mls.revoke_vector([proposal.ref])
                out.append(ToUser(user, OP_PROPOSALS, bytes((_REVOKE,)) + vector))
        return out

    def _reset_group(self, sound: list[int]) -> list[Output]:
        """Forget the group: the sole sound member (if any) starts a new one (op 24 with
        epoch 1, then op 21 with transition 0), and everyone joins it anew."""
        self.stats.resets += 1
        self.members.clear()
        self._unsound.clear()
        self._transitions.clear()  # the old group's: they must never execute now
        self._new_epoch(0)
        out: list[Output] = []
        for user in sound:
            self._key_packages.pop(user, None)  # it sends a new one
            data = {"protocol_version": self.version, "epoch": 1}
            out.append(ToUser(user, OP_PREPARE_EPOCH, data))
            data = {"protocol_version": self.version, "transition_id": 0}
            out.append(ToUser(user, OP_PREPARE_TRANSITION, data))
        return out + self._reconcile()

    def _commit_problem(self, user: int, commit: mls.Commit) -> str:
        if commit.group_id != self.channel_id:
            return f"group {commit.group_id}, not {self.channel_id}"
        if commit.epoch != self.epoch:
            return f"the channel is at epoch {self.epoch}"
        if self.established:
            if self.members.get(user) != commit.sender_leaf or user in self._unsound:
                return f"sender leaf {commit.sender_leaf} is not this user's"
        elif commit.sender_leaf != 0 or user not in self._key_packages:
            return "no group yet, and not a first commit from a member with a key package"
        expected = {p.ref for p in self._proposals if user in p.recipients}
        if commit.inline_proposals or not commit.proposal_refs:
            return "a commit must reference the gateway's proposals, and only them"
        if set(commit.proposal_refs) != expected:
            return "it does not reference exactly the proposals of this epoch"
        adds = any(p.key_package for p in self._referenced(commit))
        if adds and not commit.welcome:
            return "it adds members without a welcome"
        return ""

    def _referenced(self, commit: mls.Commit) -> list[_Proposal]:
        by_ref = {p.ref: p for p in self._proposals}
        return [by_ref[ref] for ref in commit.proposal_refs]

    def _announce(self, committer: int, commit: mls.Commit) -> list[Output]:
        """The commit wins its epoch: apply it, announce it, welcome the joiners."""
        proposals = self._referenced(commit)
        if not self.established:
            self.members = {committer: 0}
            self._key_packages.pop(committer, None)
        before = set(self.members)
        removed = {p.leaf for p in proposals if p.leaf is not None}
        self.members = {u: leaf for u, leaf in self.members.items() if leaf not in removed}
        self._unsound -= before - set(self.members)
        joiners = [p.user for p in proposals if p.key_package is not None]
        for user in joiners:
            taken = set(self.members.values())
            self.members[user] = next(i for i in range(len(taken) + 1) if i not in taken)
            self._unsound.discard(user)
            self._key_packages.pop(user, None)
        self._new_epoch(commit.epoch + 1)
        self.stats.commits_won += 1
        stayed = sorted(set(self.members) - set(joiners) - self._unsound)
        tid = self._new_transition(self.version, {*stayed, *joiners})
        self._last_commit = (tid, commit.message)
        prefix = struct.pack(">H", tid)
        out: list[Output] = [
            ToUser(u, OP_ANNOUNCE_COMMIT, prefix + self._maybe_corrupt(u, commit.message))
            for u in stayed
        ]
        out += [
            ToUser(u, OP_WELCOME, prefix + self._maybe_corrupt(u, commit.welcome)) for u in joiners
        ]
        return [*out, ArmTimeout(tid), *self._reconcile()]

    def _maybe_corrupt(self, user: int, message: bytes) -> bytes:
        if user not in self._corrupt_for:
            return message
        self._corrupt_for.discard(user)
        return message[:-1] + bytes((message[-1] ^ 0xFF,))

    # -- versions and transitions -----------------------------------------------------

    def _downgrade(self) -> list[Output]:
        """A client without DAVE joined: every DAVE user goes to version 0."""
        self.version = 0
        self.members.clear()
        self._unsound.clear()
        self._key_packages.clear()
        self._transitions.clear()  # a version-1 transition must not follow this one
        self._new_epoch(0)
        users = set(self._dave_users())
        tid = self._new_transition(0, users)
        data = {"protocol_version": 0, "transition_id": tid}
        out: list[Output] = [ToUser(u, OP_PREPARE_TRANSITION, data) for u in sorted(users)]
        return [*out, ArmTimeout(tid), *self._execute_ready()]

    def _upgrade(self) -> list[Output]:
        """The last client without DAVE left: a new group at version 1 (op 24, epoch 1)."""
        self.version = 1
        self.stats.resets += 1
        users = self._dave_users()
        out: list[Output] = [
            ToUser(u, OP_PREPARE_EPOCH, {"protocol_version": 1, "epoch": 1}) for u in users
        ]
        out += self._send_sender([u for u in users if u not in self._sender_known])
        if len(users) == 1:
            out.append(
                ToUser(users[0], OP_PREPARE_TRANSITION, {"protocol_version": 1, "transition_id": 0})
            )
        return out

    def _send_sender(self, users: list[int]) -> list[Output]:
        self._sender_known.update(users)
        return [ToUser(u, OP_EXTERNAL_SENDER, self.sender.package()) for u in users]

    def _new_transition(self, version: int, participants: set[int]) -> int:
        self._next_tid = self._next_tid % 0xFFFF + 1  # 1..65535: 0 means "at once"
        self._transitions[self._next_tid] = _Transition(
            version, set(participants), set(participants)
        )
        return self._next_tid

    def _execute_ready(self) -> list[Output]:
        out: list[Output] = []
        for tid, transition in list(self._transitions.items()):
            if not transition.waiting and not self.hold_transitions:
                out += self._execute(tid)
        return out

    def _execute(self, tid: int) -> list[Output]:
        transition = self._transitions.pop(tid, None)
        if transition is None:
            return []
        self.stats.transitions_executed += 1
        data = {"transition_id": tid}
        return [ToUser(u, OP_EXECUTE_TRANSITION, data) for u in sorted(transition.participants)]

    def _dave_users(self) -> list[int]:
        return [u for u, dave in self._present.items() if dave]

    def _reject_commit(self, why: str) -> list[Output]:
        self.stats.commits_rejected += 1
        self.stats.rejections.append(why)
        return []

    def _reject_key_package(self, why: str) -> list[Output]:
        self.stats.key_packages_rejected += 1
        self.stats.rejections.append(why)
        return []
