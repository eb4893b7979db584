"""DAVE (Discord's end-to-end encryption over MLS) on the voice gateway, sans-I/O.

:class:`DaveState` is the client side of voice gateway ops 21-31 for one voice session.
The voice protocol hands it the DAVE messages; it drives a ``davey.DaveSession`` (the
MLS work) and returns what to send and what to tell. What each message does:

| message | what happens | sent back |
|---|---|---|
| SESSION_DESCRIPTION, version > 0 | a fresh MLS state | op 26 key package |
| op 25 external sender | the gateway's signing key is set | |
| op 27 proposals | appended or revoked (unannounced users refused) | op 28, if any |
| op 29 commit / op 30 welcome | the group moves to the new epoch | op 23 (unless 0) |
| either, if it fails | the state starts over | op 31, then op 26 |
| op 21 prepare transition | remembered (version 0: passthrough) | op 23 (unless 0) |
| op 22 execute transition | the version in effect changes | |
| op 24 prepare epoch 1 | a fresh MLS state for a new group | op 26 |
| RESUMED | kept; what may have been lost is sent again | op 26 / 28 / 23 as needed |
| a new session | started over at its SESSION_DESCRIPTION | |

Every davey call is synchronous computation, so this stays a pure state machine.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any

from ..protocol import Notify, Output, Send
from .payloads import (
    ClientDisconnect,
    ClientsConnect,
    DaveExecuteTransition,
    DavePrepareEpoch,
    DavePrepareTransition,
    Op,
    VoiceBinary,
    encode_binary,
)

try:
    import davey
except ImportError as exc:  # pragma: no cover - only without the voice extra
    raise ImportError(
        "the Discord voice client needs davey for DAVE end-to-end encryption: "
        "pip install 'wavegate[voice]'"
    ) from exc

log = logging.getLogger("wavegate.discord.dave")

MAX_VERSION: int = davey.DAVE_PROTOCOL_VERSION
"""The highest DAVE protocol version this client speaks (davey's)."""

TRANSITION_EXPIRY = 10.0
"""Seconds unencrypted media is still accepted after an upgrade back to DAVE executed
(members may still be sending plain frames); after that, plain frames are refused."""
MARKER = b"\xfa\xfa"
"""The last two bytes of every DAVE-encrypted frame (the protocol's magic marker)."""
SILENCE_FRAME = b"\xf8\xff\xfe"
"""Opus silence: sent and received as it is, never encrypted."""


class DaveEvent(str, Enum):
    """The voice client's DAVE events (a :class:`~wavegate.SessionEvent`'s ``kind``)."""

    READY = "dave_ready"
    """The MLS group is active: media can be encrypted and decrypted
    (``data``: ``epoch``, ``privacy_code``)."""
    EPOCH = "dave_epoch"
    """A commit or welcome was processed (``data``: ``epoch``, ``transition_id``,
    ``privacy_code``)."""
    TRANSITION = "dave_transition"
    """A transition was executed (``data``: ``transition_id``, ``version``)."""
    ERROR = "dave_error"
    """An MLS message could not be processed (``data``: ``op``, ``transition_id``,
    ``recovery``: ``"reinit"`` when the state started over, ``"none"`` otherwise)."""


_DAVE_JSON = (DavePrepareTransition, DaveExecuteTransition, DavePrepareEpoch)


def is_dave_message(message: object) -> bool:
    """Whether ``message`` (a parsed server message) is one :class:`DaveState` handles."""
    return isinstance(message, (*_DAVE_JSON, VoiceBinary))


class DaveState:
    """The client side of DAVE for one voice session (sans-I/O).

    Args:
        user_id: this user's snowflake (the MLS credential's identity).
        channel_id: the voice channel's snowflake (the MLS group id).

    Attributes:
        session: the ``davey.DaveSession``, once the call negotiated DAVE.
        version: the DAVE protocol version in effect (0: media is not end-to-end
            encrypted); changes when a transition executes.
        known_users: users announced in the channel (ops 11 and 13), this one included:
            proposals for anyone else are refused.
        pending: transitions announced and not yet executed (id to version).
        errors: MLS messages that could not be processed, over the client's life.
        recoveries: times the MLS state started over after an invalid commit or welcome.
        last_error: the last MLS message that could not be processed, and why (cleared
            when the group becomes active).
    """

    def __init__(self, user_id: int, channel_id: int) -> None:
        self.user_id = user_id
        self.channel_id = channel_id
        self.session: davey.DaveSession | None = None
        self.version = 0
        self.known_users: set[int] = {user_id}
        self.pending: dict[int, int] = {}
        self.errors = 0
        self.recoveries = 0
        self.last_error: str | None = None
        self._negotiated = 0
        """The version the gateway last announced (it takes effect at a transition)."""
        self._readied: set[int] = set()
        self._reinitializing = False
        self._key_package: bytes | None = None
        self._sender: bytes | None = None
        self._commit: tuple[int, bytes] | None = None
        """The last commit sent, and the epoch it would end, until it is announced."""
        self._downgraded = False
        self._started = False
        self._flagged: int | None = None
        """The transition id of an op 31 sent, until a commit or welcome succeeds."""

    def __repr__(self) -> str:
        return f"<DaveState v{self.version} {self.status()}>"

    @property
    def active(self) -> bool:
        """Whether media is end-to-end encrypted now: DAVE is on and the group active."""
        return self.version > 0 and self.session is not None and self.session.ready

    @property
    def epoch(self) -> int | None:
        """The group's epoch (``None``: no group)."""
        return None if self.session is None else self.session.epoch

    @property
    def privacy_code(self) -> str | None:
        """The call's voice privacy code (equal for every member), once active."""
        return self.session.voice_privacy_code if self.active and self.session else None

    def status(self) -> str:
        """Where DAVE stands, in words (for timeouts and logs)."""
        if self.active:
            return f"active at epoch {self.epoch}"
        if not self._negotiated and not self.version:
            return "off: the call negotiated protocol version 0 (or not yet)"
        if self._reinitializing:
            return "starting over after an invalid commit or welcome"
        if self.session is None or self.session.status == davey.SessionStatus.inactive:
            return "waiting for the gateway's external sender (op 25)"
        if not self.version:
            return "waiting for the transition to DAVE to execute"
        others = len(self.known_users) - 1
        if others:
            status = (
                "key package sent, waiting to be welcomed into the group "
                f"({others} other user(s) announced in the channel)"
            )
        else:
            status = (
                "alone in the channel: the group forms when another member joins "
                "(until then there is nobody to encrypt for)"
            )
        return status if self.last_error is None else f"{status}; last error: {self.last_error}"

    # -- what the voice protocol calls ---------------------------------------------

    @property
    def negotiated(self) -> bool:
        """Whether this session's SESSION_DESCRIPTION arrived (``version`` is the call's)."""
        return self._started

    def start(self, version: int) -> list[Output]:
        """A new session's SESSION_DESCRIPTION negotiated ``version``."""
        self._started = True
        self._negotiated = self.version = version
        return self._reinit(Op.SESSION_DESCRIPTION)

    def forget(self) -> None:
        """A new session begins: nothing of the old one carries over (not even the MLS
        session: its group belongs to the old session)."""
        self.session = None
        self.known_users = {self.user_id}
        self.pending.clear()
        self._readied.clear()
        self._negotiated = self.version = 0
        self._started = self._reinitializing = self._downgraded = False
        self._key_package = self._commit = self._sender = self._flagged = None
        self.last_error = None

    def resumed(self) -> list[Output]:
        """The session was resumed: the state is kept; what the old connection may have
        lost on its way out (a key package, a commit, transition readiness) is sent
        again. The gateway ignores what it already had."""
        out: list[Output] = []
        session = self.session
        if session is None or not self._negotiated:
            return out
        if self._flagged is not None:
            out.append(_flag(self._flagged))
        if not session.ready and self._key_package is not None:
            out.append(Send(encode_binary(Op.DAVE_MLS_KEY_PACKAGE, self._key_package)))
        if self._commit is not None and self._commit[0] == session.epoch:
            out.append(Send(encode_binary(Op.DAVE_MLS_COMMIT_WELCOME, self._commit[1])))
        out += [_ready(tid) for tid in sorted(self._readied)]
        return out

    def observe(self, message: object) -> None:
        """See a message the application gets too (ops 11 and 13 say who is here)."""
        if isinstance(message, ClientsConnect):
            self.known_users.update(_ids(message.user_ids))
        elif isinstance(message, ClientDisconnect):
            self.known_users.difference_update(_ids((message.user_id,)))

    def receive(self, message: object) -> list[Output]:
        """Handle a DAVE message (see :func:`is_dave_message`)."""
        was_active = self.active
        if isinstance(message, VoiceBinary):
            out = self._binary(message)
        elif isinstance(message, DavePrepareTransition):
            out = self._prepare_transition(message.transition_id, message.protocol_version)
        elif isinstance(message, DaveExecuteTransition):
            out = self._execute(message.transition_id)
        elif isinstance(message, DavePrepareEpoch):
            out = self._prepare_epoch(message.epoch, message.protocol_version)
        else:
            return []
        if self.active and not was_active:
            detail = f"the DAVE group is active at epoch {self.epoch}"
            ready = self._notify(
                DaveEvent.READY, detail, epoch=self.epoch, privacy_code=self.privacy_code
            )
            out.append(ready)
        return out

    # -- media helpers -------------------------------------------------------------

    def encrypt_opus(self, frame: bytes) -> bytes:
        """``frame`` end-to-end encrypted if DAVE is active; as it is otherwise (and
        for silence frames)."""
        if not self.active or frame == SILENCE_FRAME or self.session is None:
            return frame
        return self.session.encrypt_opus(frame)

    def decrypt(self, user_id: int, frame: bytes) -> bytes | None:
        """``user_id``'s audio ``frame`` decrypted, or ``None`` when it must be dropped.

        Encrypted frames (they end with :data:`MARKER`) are decrypted, or ``None`` when
        they cannot be (no group yet, another epoch). Plain frames pass while DAVE is
        off, while there is no group, and for ``TRANSITION_EXPIRY`` seconds after an
        upgrade; while the group is active they are refused (``None``): anyone on the
        media path could have injected them. Silence frames always pass.
        """
        if frame == SILENCE_FRAME:
            return frame
        if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id < 0:
            raise ValueError(f"decrypt needs the speaker's user id (a snowflake), not {user_id!r}")
        session = self.session
        encrypted = frame.endswith(MARKER)
        if session is None or not session.ready:
            return None if encrypted else frame
        if not encrypted and not self.version:
            return frame
        try:  # davey refuses plain frames unless passthrough is open for the user
            return session.decrypt(user_id, davey.MediaType.audio, frame)
        except ValueError as exc:
            log.debug("dropping a frame from %s: %s", user_id, exc)
            return None

    # -- messages ------------------------------------------------------------------

    def _binary(self, message: VoiceBinary) -> list[Output]:
        session = self.session
        if session is None:
            log.debug("ignoring DAVE op %s: DAVE is off", message.op)
            return []
        if message.op == Op.DAVE_MLS_EXTERNAL_SENDER:
            return self._external_sender(session, message.body)
        if message.op == Op.DAVE_MLS_PROPOSALS:
            return self._proposals(session, message)
        if message.op in (Op.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION, Op.DAVE_MLS_WELCOME):
            return self._commit_or_welcome(session, message)
        log.debug("ignoring binary op %s", message.op)
        return []

    def _external_sender(self, session: davey.DaveSession, body: bytes) -> list[Output]:
        if body == self._sender:
            return []  # a state started over keeps it
        try:
            session.set_external_sender(body)
        except Exception as exc:
            return self._error(Op.DAVE_MLS_EXTERNAL_SENDER, None, f"external sender: {exc}")
        self._sender = body
        return []

    def _proposals(self, session: davey.DaveSession, message: VoiceBinary) -> list[Output]:
        if message.operation_type not in (0, 1):
            return self._error(message.op, None, f"unknown operation type {message.operation_type}")
        kind = (
            davey.ProposalsOperationType.append
            if message.operation_type == 0
            else davey.ProposalsOperationType.revoke
        )
        expected = sorted(self.known_users)
        try:
            result = session.process_proposals(kind, message.body[1:], expected)
        except Exception as exc:  # davey raises ValueError; a binding may raise others
            if kind is davey.ProposalsOperationType.revoke:
                # Revoking proposals this member never took in (they were refused, or
                # came before it joined) changes nothing: not an error.
                log.debug("revoke of proposals not held: %s", exc)
                return []
            why = f"proposals refused: {exc}"
            if "WrongGroupId" in str(exc):
                why += (
                    f"; the gateway's MLS group is not channel {self.channel_id}: DAVE's "
                    "group id is the voice channel's id, pass it as VoiceCredentials.channel_id"
                )
            return self._error(message.op, None, why)
        if result is None:
            return []
        body = result.commit + (result.welcome or b"")
        self._commit = (session.epoch or 0, body)
        return [Send(encode_binary(Op.DAVE_MLS_COMMIT_WELCOME, body))]

    def _commit_or_welcome(self, session: davey.DaveSession, message: VoiceBinary) -> list[Output]:
        tid = message.transition_id
        if tid is None:
            return self._invalid(message.op, 0, "a frame too short for its transition id")
        body = message.body[2:]
        try:
            if message.op == Op.DAVE_MLS_WELCOME:
                session.process_welcome(body)
            else:
                session.process_commit(body)
        except Exception as exc:
            return self._invalid(message.op, tid, str(exc))
        self._reinitializing = False
        self._commit = self._flagged = self.last_error = None
        if tid == 0:
            self.version = self._negotiated  # applies at once
        out: list[Output] = [
            self._notify(
                DaveEvent.EPOCH,
                f"epoch {session.epoch}",
                epoch=session.epoch,
                transition_id=tid,
                privacy_code=session.voice_privacy_code,
            )
        ]
        if tid == 0:
            return out  # applies at once
        self.pending[tid] = self._negotiated
        self._readied.add(tid)
        return [*out, _ready(tid)]

    def _prepare_transition(self, tid: int, version: int) -> list[Output]:
        self.pending[tid] = version
        if tid == 0:
            return self._execute(0)
        if version == 0 and self.session is not None:
            self.session.set_passthrough_mode(True)  # plain frames from now on
        self._readied.add(tid)
        return [_ready(tid)]

    def _execute(self, tid: int) -> list[Output]:
        if tid not in self.pending:
            log.debug("execute for transition %s, which is not pending", tid)
            return []
        for earlier in list(self.pending):  # transitions run in order: an earlier one
            if earlier == tid:  # that never executed has been superseded
                break
            del self.pending[earlier]
            self._readied.discard(earlier)
        old, self.version = self.version, self.pending.pop(tid)
        self._readied.discard(tid)
        if old and not self.version:
            self._downgraded = True
        elif tid and self._downgraded and self.version:
            self._downgraded = False
            if self.session is not None:
                # Members still switching send plain frames for a while: accept them
                # for TRANSITION_EXPIRY seconds, then no more. (davey: passthrough on,
                # then off with an expiry; "on with an expiry" never ends.)
                self.session.set_passthrough_mode(True)
                self.session.set_passthrough_mode(False, int(TRANSITION_EXPIRY))
        return [
            self._notify(
                DaveEvent.TRANSITION,
                f"transition {tid} executed: version {old} -> {self.version}",
                transition_id=tid,
                version=self.version,
            )
        ]

    def _prepare_epoch(self, epoch: int, version: int) -> list[Output]:
        if epoch != 1:
            return []
        self._negotiated = self.version = version
        self._reinitializing = False
        return self._reinit(Op.DAVE_PREPARE_EPOCH)

    # -- starting over -------------------------------------------------------------

    def _reinit(self, op: int) -> list[Output]:
        """A fresh MLS state and a new key package (or DAVE off at version 0); ``op``:
        the message that asked for it."""
        self._commit = None
        if self._negotiated <= 0:
            if self.session is not None:
                self.session.reset()
                self.session.set_passthrough_mode(True)
            return []
        try:
            if self.session is None:
                self.session = davey.DaveSession(self._negotiated, self.user_id, self.channel_id)
            else:
                self.session.reinit(self._negotiated, self.user_id, self.channel_id)
        except ValueError as exc:  # a version davey does not speak
            return self._error(op, None, f"cannot start DAVE: {exc}")
        self._key_package = self.session.get_serialized_key_package()
        return [Send(encode_binary(Op.DAVE_MLS_KEY_PACKAGE, self._key_package))]

    def _invalid(self, op: int, tid: int, why: str) -> list[Output]:
        """A commit or welcome failed: flag it (op 31) and start over, once per
        recovery: while one is under way, failed commits are expected (there is no
        group to apply them to) and only counted, unless this member has committed
        since it started over (then the commit was built on its new state); a failed
        welcome is never expected (it was meant for the new key package)."""
        own = self._commit is not None
        if self._reinitializing and op != Op.DAVE_MLS_WELCOME and not own:
            return self._error(op, tid, f"{why} (expected while starting over)", expected=True)
        self.errors += 1
        self.recoveries += 1
        self.last_error = why
        self._reinitializing = True
        self._readied.discard(tid)
        self._flagged = tid
        event = self._notify(DaveEvent.ERROR, why, op=op, transition_id=tid, recovery="reinit")
        return [event, _flag(tid), *self._reinit(op)]

    def _error(self, op: int, tid: int | None, why: str, *, expected: bool = False) -> list[Output]:
        self.errors += 1
        self.last_error = why
        event = Notify(DaveEvent.ERROR, why, {"op": op, "transition_id": tid, "recovery": "none"})
        log.log(logging.DEBUG if expected else logging.WARNING, "DAVE dave_error: %s", why)
        return [event]

    @staticmethod
    def _notify(kind: DaveEvent, detail: str, **data: Any) -> Notify:
        level = logging.WARNING if kind is DaveEvent.ERROR else logging.DEBUG
        log.log(level, "DAVE %s: %s", kind.value, detail)
        return Notify(kind, detail, data)


def _flag(tid: int) -> Send:
    return Send({"op": int(Op.DAVE_MLS_INVALID_COMMIT_WELCOME), "d": {"transition_id": tid}})


def _ready(tid: int) -> Send:
    return Send({"op": int(Op.DAVE_TRANSITION_READY), "d": {"transition_id": tid}})


def _ids(user_ids: tuple[str, ...]) -> set[int]:
    return {int(u) for u in user_ids if u.isascii() and u.isdigit()}
