"""The supervisor's decisions and states, with no sockets, no event loop and no sleep.

docs/supervisor.md's decision table is the table below, row by row; hypothesis then
drives the machine through arbitrary endings and checks what must always hold.
"""

from __future__ import annotations

import ast
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wavegate import Backoff, DisconnectSignal, Event, ReconnectSignal, ResumeSignal, Signal
from wavegate.backoff import RetrySchedule
from wavegate.session.machine import (
    TRANSITIONS,
    AwaitMove,
    Decision,
    Ending,
    NewSession,
    Outcome,
    Resume,
    RetryRules,
    SessionMachine,
    SessionState,
    Stop,
    Trigger,
    decide,
)

ROOT = Path(__file__).resolve().parent.parent

RESUME_4015 = ResumeSignal("crashed", code=4015, event=Event.PEER_CLOSE)
NEW_4006 = ReconnectSignal("session no longer valid", code=4006, event=Event.PEER_CLOSE)
REFUSED = ReconnectSignal("connection refused", event=Event.CONNECT_REFUSED)
MOVED_4014 = DisconnectSignal("disconnected", code=4014, event=Event.PEER_CLOSE)
LIMITED_4021 = DisconnectSignal("rate limited", code=4021, event=Event.PEER_CLOSE)
LIMITED_429 = ReconnectSignal("HTTP 429", code=429, event=Event.HANDSHAKE_STATUS, retry_after=30.0)
BUSY_503 = ReconnectSignal("HTTP 503", code=503, event=Event.HANDSHAKE_STATUS, retry_after=0.1)

RULES = RetryRules(max_resume_attempts=3, move_codes=frozenset({4014}), move_grace=5.0)


# (row of docs/supervisor.md, ending, context, backoff delays, expected decision)
DECISIONS: list[tuple[str, Ending, dict[str, object], list[float | None], Decision]] = [
    ("close() was called", Ending(RESUME_4015), {"closing": True}, [],
     Stop(Outcome("closed", RESUME_4015))),
    ("DisconnectSignal", Ending(LIMITED_4021), {}, [], Stop(Outcome("disconnect", LIMITED_4021))),
    ("DisconnectSignal, move code, move_grace", Ending(MOVED_4014), {}, [], AwaitMove(5.0)),
    ("DisconnectSignal, move code, no move_grace", Ending(MOVED_4014),
     {"rules": RetryRules(move_grace=0.0)}, [], Stop(Outcome("disconnect", MOVED_4014))),
    ("ResumeSignal: the first resume (after a healthy connection) is immediate",
     Ending(RESUME_4015), {}, [0.7], Resume(0.0, 1)),
    ("ResumeSignal after a flap (READY, closed again at once): backs off",
     Ending(RESUME_4015, reached_ready=True), {"backoff_attempts": 1}, [0.3], Resume(0.3, 1)),
    ("ResumeSignal: later ones back off", Ending(RESUME_4015), {"resume_attempts": 1}, [0.3],
     Resume(0.3, 2)),
    ("ResumeSignal: after max_resume_attempts, a new session", Ending(RESUME_4015),
     {"resume_attempts": 3}, [0.4], NewSession(0.4)),
    ("ResumeSignal with nothing to resume: a new session", Ending(RESUME_4015),
     {"can_resume": False}, [0.1], NewSession(0.1)),
    ("a failed connect while resuming: resume again", Ending(REFUSED, while_opening=True),
     {"resuming": True, "resume_attempts": 1}, [0.2], Resume(0.2, 2)),
    ("a failed connect for a new session: a new session", Ending(REFUSED, while_opening=True),
     {}, [0.2], NewSession(0.2)),
    ("ReconnectSignal (4006, even while resuming): a new session", Ending(NEW_4006),
     {"resuming": True}, [0.5], NewSession(0.5)),
    ("ReconnectSignal with a code in stale_codes: stop, needs credentials", Ending(NEW_4006),
     {"rules": RetryRules(stale_codes=frozenset({4006}))}, [],
     Stop(Outcome("needs_credentials", NEW_4006))),
    ("a stale code ends a resume too", Ending(NEW_4006),
     {"resuming": True, "rules": RetryRules(stale_codes=frozenset({4006}))}, [],
     Stop(Outcome("needs_credentials", NEW_4006))),
    ("ReconnectSignal with a Retry-After: a new session no sooner than it",
     Ending(LIMITED_429, while_opening=True), {}, [0.5], NewSession(30.0)),
    ("ReconnectSignal with a Retry-After shorter than the backoff's delay: the delay",
     Ending(BUSY_503, while_opening=True), {}, [0.5], NewSession(0.5)),
    ("a failed connect while resuming: resume no sooner than its Retry-After",
     Ending(LIMITED_429, while_opening=True), {"resuming": True, "resume_attempts": 1}, [0.2],
     Resume(30.0, 2)),
    ("ResumeSignal: even the first (immediate) resume waits out a Retry-After",
     Ending(LIMITED_429, while_opening=True), {"resuming": True}, [0.7], Resume(30.0, 1)),
    ("backoff attempts spent (new session)", Ending(NEW_4006), {}, [None],
     Stop(Outcome("retries_exhausted", NEW_4006))),
    ("backoff attempts spent (resume)", Ending(RESUME_4015), {"resume_attempts": 1}, [None],
     Stop(Outcome("retries_exhausted", RESUME_4015))),
]  # fmt: skip


@pytest.mark.parametrize(
    ("row", "ending", "context", "backoff", "expected"), DECISIONS, ids=[d[0] for d in DECISIONS]
)
def test_the_decision_table(
    row: str,
    ending: Ending,
    context: dict[str, object],
    backoff: list[float | None],
    expected: Decision,
) -> None:
    options: dict[str, object] = {
        "closing": False,
        "can_resume": True,
        "resuming": False,
        "resume_attempts": 0,
        "rules": RULES,
        **context,
    }
    scripted = ScriptedBackoff(backoff, int(options.pop("backoff_attempts", 0)))  # type: ignore[call-overload]
    decision = decide(ending, backoff=scripted, **options)  # type: ignore[arg-type]
    assert decision == expected
    assert scripted.unused() == []  # the backoff was asked exactly when needed


class ScriptedBackoff:
    """A backoff that hands out the given delays and counts like RetrySchedule."""

    def __init__(self, delays: list[float | None], attempts: int) -> None:
        self._delays = list(delays)
        self.attempts = attempts

    def next_delay(self) -> float | None:
        delay = self._delays.pop(0)
        if delay is not None:
            self.attempts += 1
        return delay

    def unused(self) -> list[float | None]:
        return self._delays


def test_every_documented_decision_row_is_tested() -> None:
    text = (ROOT / "docs" / "supervisor.md").read_text()
    table = text.split("## Decisions", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| (.+?) \| .+ \|$", table, re.M)[1:]  # after the header
    assert len(documented) == 7
    tested = " ".join(row for row, *_ in DECISIONS)
    for first_words in ("close()", "DisconnectSignal", "ResumeSignal", "ReconnectSignal"):
        assert first_words in tested
    assert "backoff attempts spent" in tested
    assert "stale_codes" in tested
    # The seventh row, a bug (an exception that is not a signal), is the facade's:
    # tests/test_voice_faults.py and the runner's tests cover it.


# -- the state table ------------------------------------------------------------------------


def test_the_documented_transitions_are_the_machines() -> None:
    text = (ROOT / "docs" / "supervisor.md").read_text()
    table = text.split("## State", 1)[1]
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| `(\w+)` \|$", table, re.M)
    documented = {(SessionState(a), Trigger(t), SessionState(b)) for a, t, b in rows}
    actual = {(a, t, b) for a, moves in TRANSITIONS.items() for t, b in moves.items()}
    assert documented == actual


def machine(backoff: Backoff | None = None, seed: int = 0) -> SessionMachine:
    clock = iter(range(10**6))
    schedule = RetrySchedule(
        backoff or Backoff(base=0.1, cap=2.0, max_attempts=5),
        clock=lambda: float(next(clock)),
        rng=random.Random(seed),
    )
    return SessionMachine(RULES, schedule)


def state(m: SessionMachine) -> SessionState:
    return m.state


def test_a_life_through_the_table() -> None:
    m = machine()
    assert m.start() is SessionState.CONNECTING
    assert m.handshake_done() is SessionState.READY
    assert isinstance(
        m.connection_ended(Ending(RESUME_4015, reached_ready=True), closing=False, can_resume=True),
        Resume,
    )
    assert state(m) is SessionState.RESUMING
    assert isinstance(
        m.connection_ended(Ending(NEW_4006), closing=False, can_resume=True), NewSession
    )
    assert state(m) is SessionState.WAITING
    assert m.retry_due() is SessionState.CONNECTING
    assert isinstance(
        m.connection_ended(Ending(MOVED_4014), closing=False, can_resume=True), AwaitMove
    )
    assert state(m) is SessionState.AWAITING_MOVE
    assert m.moved() is SessionState.CONNECTING
    assert m.stop() is SessionState.STOPPED
    with pytest.raises(AssertionError, match="no transition from stopped on start"):
        m.start()  # fmt: skip


# -- properties ----------------------------------------------------------------------------

SIGNALS = st.sampled_from([RESUME_4015, NEW_4006, REFUSED, MOVED_4014, LIMITED_4021])
ENDINGS = st.builds(
    Ending, signal=SIGNALS, reached_ready=st.booleans(), while_opening=st.booleans()
)


@settings(max_examples=300)
@given(
    endings=st.lists(st.tuples(ENDINGS, st.booleans()), min_size=1, max_size=40),
    seed=st.integers(0, 1000),
)
def test_whatever_happens_the_rules_hold(endings: list[tuple[Ending, bool]], seed: int) -> None:
    backoff = Backoff(base=0.1, cap=2.0, max_attempts=5)
    m = machine(backoff, seed)
    m.start()
    in_a_row = 0  # retries since a connection was last usable
    for ending, can_resume in endings:
        if m.state is SessionState.STOPPED:
            break
        if ending.reached_ready and m.state in (SessionState.CONNECTING, SessionState.RESUMING):
            m.handshake_done()
            in_a_row = 0
        decision = m.connection_ended(ending, closing=False, can_resume=can_resume)
        signal: Signal = ending.signal
        if isinstance(signal, DisconnectSignal):  # never retries a stop code
            assert isinstance(decision, (Stop, AwaitMove))
        if isinstance(signal, ReconnectSignal) and not ending.while_opening:
            assert not isinstance(decision, Resume)  # never resumes after a 4006
        if isinstance(decision, Resume):
            assert can_resume
            assert 1 <= decision.attempt <= RULES.max_resume_attempts  # attempts bounded
        if isinstance(decision, (Resume, NewSession)):
            assert 0 <= decision.delay <= backoff.cap  # backoff within bounds
            in_a_row += 1
            assert in_a_row <= backoff.max_attempts  # type: ignore[operator]
        if isinstance(decision, Stop) and decision.outcome.reason == "retries_exhausted":
            # Given up only after max_attempts retries that never got a usable
            # connection: a server that recycles them is followed for ever.
            assert in_a_row == backoff.max_attempts
        if isinstance(decision, AwaitMove):
            m.moved()
        elif m.state is SessionState.WAITING:
            m.retry_due()
    assert m.state in TRANSITIONS


# -- what the pure parts import --------------------------------------------------------------

PURE = [
    "wavegate.protocol",
    "wavegate.session.machine",
    "wavegate.discord.payloads",
    "wavegate.discord.voice_protocol",
    "wavegate.discord.dave",
    "wavegate.testing.dave",
    "wavegate.testing.mls",
    "wavegate.testing.voice_rules",
    "wavegate.discord.ip_discovery",
    "wavegate.policy",
    "wavegate.backoff",
    "wavegate.heartbeat",
    "wavegate.signals",
    "wavegate.packets",
    "wavegate.redact",
]
FORBIDDEN = (
    "asyncio",
    "socket",
    "ssl",
    "aiohttp",
    "picows",
    "wavegate.transport",
    "wavegate.websocket",
    "wavegate.session.connection",
    "wavegate.session.outbox",
)


def imports_of(module: str) -> set[str]:
    """What ``module`` imports, relative imports resolved (from its source, not run)."""
    parts = module.split(".")
    path = ROOT / "src" / Path(*parts)
    is_package = (path / "__init__.py").exists()
    source = path / "__init__.py" if is_package else path.with_suffix(".py")
    package = parts if is_package else parts[:-1]
    found: set[str] = set()
    for node in _nodes(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            if node.module:  # `from . import sibling` names the sibling, not the package
                found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def _nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except under ``if sys.version_info ...``: version shims (Python 3.10's
    asyncio.TimeoutError in signals.py) are not the design."""
    kept, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "version_info" in ast.unparse(node.test):
            continue
        kept.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return kept


def reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imports_of(current):
            candidate = ROOT / "src" / Path(*name.split("."))
            if name.startswith("wavegate") and (
                candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists()
            ):
                todo.append(name)
            else:
                seen.add(name)
    return seen


@pytest.mark.parametrize("module", PURE)
def test_the_pure_parts_import_no_asyncio_and_no_transport(module: str) -> None:
    imported = reachable(module)
    bad = sorted(n for n in imported if any(n == f or n.startswith(f + ".") for f in FORBIDDEN))
    assert bad == [], f"{module} reaches {bad}"
