"""The session's decisions, as a pure state machine (no I/O, no asyncio, no clock
but the one injected into :class:`~wavegate.backoff.RetrySchedule`).

:func:`decide` says what to do after a connection ended; :class:`SessionMachine`
keeps the state that decision needs (attempt counts, the backoff) and moves the
session's :class:`SessionState` through :data:`TRANSITIONS`, the only place a
session's state changes. The code that owns sockets and tasks asks and obeys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from ..backoff import RetrySchedule
from ..signals import DisconnectSignal, ReconnectSignal, ResumeSignal, Signal


class SessionState(str, Enum):
    """Where a :class:`~wavegate.Session` is."""

    IDLE = "idle"
    """Not started."""
    CONNECTING = "connecting"
    """Opening a connection for a new session (IDENTIFY)."""
    RESUMING = "resuming"
    """Opening a connection to resume the session (RESUME)."""
    READY = "ready"
    """The handshake is done: messages flow."""
    WAITING = "waiting"
    """Backing off before the next attempt."""
    AWAITING_MOVE = "awaiting_move"
    """Closed with one of ``move_codes`` (4014): waiting up to ``move_grace`` for
    :meth:`~wavegate.Session.move`."""
    STOPPED = "stopped"
    """For good; ``outcome`` says why."""

    def __str__(self) -> str:  # as the docs name it: ``ready``, not ``SessionState.READY``
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Trigger(str, Enum):
    """What moves a session from one state to the next."""

    START = "start"
    HANDSHAKE_DONE = "handshake_done"
    RESUME = "resume"
    """Resume at once."""
    NEW_SESSION = "new_session"
    """Open a new session at once."""
    BACK_OFF = "back_off"
    """Wait, then resume or open a new session."""
    RETRY_RESUME = "retry_resume"
    RETRY_NEW_SESSION = "retry_new_session"
    AWAIT_MOVE = "await_move"
    MOVED = "moved"
    STOP = "stop"


_S, _T = SessionState, Trigger
_AFTER_A_CONNECTION = {
    _T.HANDSHAKE_DONE: _S.READY,
    _T.RESUME: _S.RESUMING,
    _T.NEW_SESSION: _S.CONNECTING,
    _T.BACK_OFF: _S.WAITING,
    _T.AWAIT_MOVE: _S.AWAITING_MOVE,
    _T.STOP: _S.STOPPED,
}
TRANSITIONS: Mapping[SessionState, Mapping[Trigger, SessionState]] = {
    _S.IDLE: {_T.START: _S.CONNECTING, _T.STOP: _S.STOPPED},
    _S.CONNECTING: _AFTER_A_CONNECTION,
    _S.RESUMING: _AFTER_A_CONNECTION,
    _S.READY: {t: s for t, s in _AFTER_A_CONNECTION.items() if t is not _T.HANDSHAKE_DONE},
    _S.WAITING: {
        _T.RETRY_RESUME: _S.RESUMING,
        _T.RETRY_NEW_SESSION: _S.CONNECTING,
        _T.STOP: _S.STOPPED,
    },
    _S.AWAITING_MOVE: {_T.MOVED: _S.CONNECTING, _T.STOP: _S.STOPPED},
    _S.STOPPED: {},
}
"""Every state change a session can make, and the trigger of each (h11-style)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """Why a session stopped.

    Attributes:
        reason: ``"closed"`` (by ``close()``), ``"disconnect"`` (a
            :class:`DisconnectSignal`), ``"retries_exhausted"``,
            ``"needs_credentials"`` (a stale code, see :class:`RetryRules`) or
            ``"error"``.
        signal: the last signal, if any.
        error: the unexpected exception, for ``"error"``.
        explanation: what the close means, when the protocol knows (e.g. voice 4017).
    """

    reason: str
    signal: Signal | None = None
    error: BaseException | None = None
    explanation: str = ""

    @property
    def code(self) -> int | None:
        """The close code (or HTTP status) of the last signal."""
        return None if self.signal is None else self.signal.code

    @property
    def summary(self) -> str:
        """The reason, and for ``"error"`` the exception: ``error: ValueError: ...``."""
        if self.error is None:
            return self.reason
        message = str(self.error)
        name = type(self.error).__name__
        return f"{self.reason}: {name}: {message}" if message else f"{self.reason}: {name}"

    def __str__(self) -> str:
        if self.error is not None:  # the signal is only how we closed: our own 4000
            code = None if self.signal is None else self.signal.code
            text = self.summary + (f" (closed with {code})" if code is not None else "")
        else:
            text = self.reason if self.signal is None else f"{self.reason}: {self.signal}"
        return f"{text} ({self.explanation})" if self.explanation else text


@dataclass(frozen=True, slots=True)
class Ending:
    """How one connection ended, as the supervisor sees it.

    Attributes:
        signal: what the websocket said.
        reached_ready: the handshake had completed.
        while_opening: the connection never opened (``connect()`` failed).
    """

    signal: Signal
    reached_ready: bool = False
    while_opening: bool = False


@dataclass(frozen=True, slots=True)
class Resume:
    """Resume the session after ``delay`` seconds (attempt ``attempt`` in a row)."""

    delay: float
    attempt: int


@dataclass(frozen=True, slots=True)
class NewSession:
    """Open a new session after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class AwaitMove:
    """Wait up to ``grace`` seconds for a move, then stop."""

    grace: float


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop for good."""

    outcome: Outcome


Decision = Resume | NewSession | AwaitMove | Stop


@dataclass(frozen=True, slots=True)
class RetryRules:
    """The supervisor's rules (see :class:`~wavegate.Session` for each)."""

    max_resume_attempts: int = 3
    move_codes: frozenset[int] = frozenset({4014})
    move_grace: float = 0.0
    stale_codes: frozenset[int] = frozenset()
    """Codes after which a new session needs credentials the session cannot get
    (Discord voice's 4006 with no way to fetch a fresh token): stop, don't loop."""


class BackoffCount(Protocol):
    """What :func:`decide` needs of the backoff (a :class:`~wavegate.RetrySchedule`)."""

    @property
    def attempts(self) -> int:
        """Retries in a row so far (since a connection last stayed healthy)."""
        ...

    def next_delay(self) -> float | None:
        """Count one more retry: the delay before it, or ``None`` when attempts are spent."""
        ...


def decide(
    ending: Ending,
    *,
    closing: bool,
    can_resume: bool,
    resuming: bool,
    resume_attempts: int,
    rules: RetryRules,
    backoff: BackoffCount,
) -> Decision:
    """What to do after a connection ended (docs/supervisor.md, "Decisions").

    Every retry grows the backoff's delays; the first resume after a connection that
    stayed healthy is immediate, while one that flaps (READY, then at once closed
    again) backs off like any other retry. Only retries that never reached READY
    count towards giving up (see :class:`~wavegate.RetrySchedule`).

    Args:
        ending: how it ended.
        closing: ``close()`` was called.
        can_resume: the protocol has a session to resume.
        resuming: that connection was a resume attempt.
        resume_attempts: resume attempts in a row before this one ended.
        rules: the supervisor's rules.
        backoff: the retry count and delays.
    """
    signal = ending.signal
    if closing:
        return Stop(Outcome("closed", signal))
    if isinstance(signal, DisconnectSignal):
        if signal.code in rules.move_codes and rules.move_grace > 0:
            return AwaitMove(rules.move_grace)
        return Stop(Outcome("disconnect", signal))
    # A resume that could not even connect is retried as a resume.
    retry_resume = isinstance(signal, ResumeSignal) or (
        resuming and isinstance(signal, ReconnectSignal) and ending.while_opening
    )
    if retry_resume and can_resume and resume_attempts < rules.max_resume_attempts:
        delay = backoff.next_delay()
        if delay is None:
            return Stop(Outcome("retries_exhausted", signal))
        if resume_attempts == 0 and backoff.attempts == 1:
            delay = 0.0  # the first retry since the connection was healthy: at once
        return Resume(max(delay, signal.retry_after or 0.0), resume_attempts + 1)
    if signal.code in rules.stale_codes:
        return Stop(Outcome("needs_credentials", signal))
    delay = backoff.next_delay()
    if delay is None:
        return Stop(Outcome("retries_exhausted", signal))
    return NewSession(max(delay, signal.retry_after or 0.0))  # the server's wish holds


class SessionMachine:
    """A session's state and the counts its decisions need.

    Args:
        rules: the supervisor's rules.
        schedule: the backoff (pure, with its own injectable clock).
    """

    def __init__(self, rules: RetryRules, schedule: RetrySchedule) -> None:
        self.rules = rules
        self.schedule = schedule
        self.state = SessionState.IDLE
        self.resume_attempts = 0
        self._pending: Decision | None = None

    def _fire(self, trigger: Trigger) -> SessionState:
        try:
            self.state = TRANSITIONS[self.state][trigger]
        except KeyError:
            message = f"no transition from {self.state.value} on {trigger.value}"
            raise AssertionError(message) from None
        return self.state

    def start(self) -> SessionState:
        """The session starts: a new session is opened."""
        return self._fire(Trigger.START)

    def handshake_done(self) -> SessionState:
        """The connection is ready. The backoff may reset once it stays healthy."""
        self.schedule.healthy()
        return self._fire(Trigger.HANDSHAKE_DONE)

    def connection_ended(self, ending: Ending, *, closing: bool, can_resume: bool) -> Decision:
        """Decide what to do and move to the state that does it."""
        if ending.reached_ready:
            self.resume_attempts = 0
        decision = decide(
            ending,
            closing=closing,
            can_resume=can_resume,
            resuming=self.state is SessionState.RESUMING,
            resume_attempts=self.resume_attempts,
            rules=self.rules,
            backoff=self.schedule,
        )
        if isinstance(decision, Resume):
            self.resume_attempts = decision.attempt
        elif isinstance(decision, NewSession):
            self.resume_attempts = 0
        self._fire(self._trigger(decision))
        self._pending = decision
        return decision

    @staticmethod
    def _trigger(decision: Decision) -> Trigger:
        if isinstance(decision, Stop):
            return Trigger.STOP
        if isinstance(decision, AwaitMove):
            return Trigger.AWAIT_MOVE
        if decision.delay > 0:
            return Trigger.BACK_OFF
        return Trigger.RESUME if isinstance(decision, Resume) else Trigger.NEW_SESSION

    def retry_due(self) -> SessionState:
        """The backoff delay is over: resume, or open a new session."""
        resume = isinstance(self._pending, Resume)
        return self._fire(Trigger.RETRY_RESUME if resume else Trigger.RETRY_NEW_SESSION)

    def moved(self) -> SessionState:
        """A move came within the grace: a new session, at the new endpoint."""
        return self._fire(Trigger.MOVED)

    def stop(self) -> SessionState:
        """Stop now (``close()``, the move grace ran out, or an error)."""
        if self.state is not SessionState.STOPPED:
            self._fire(Trigger.STOP)
        return self.state
