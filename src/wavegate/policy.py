"""Close-code policy: what every way a connection can end means (pure, no I/O).

A :class:`ClosePolicy` maps each close code, and each event that has no close code
(TCP drop, keepalive timeout, handshake status, connect failure...), to an
:class:`Action`. ``Websocket`` asks it once per connection end and raises the
matching signal. Policies are immutable data; derive your own with
:meth:`ClosePolicy.derive`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from types import MappingProxyType

from .signals import DisconnectSignal, Event, ReconnectSignal, ResumeSignal, Signal


class Action(str, Enum):
    """What the caller should do after a connection ends."""

    DISCONNECT = "disconnect"
    RECONNECT = "reconnect"
    RESUME = "resume"

    @property
    def signal_type(self) -> type[Signal]:
        """The signal class that carries this action."""
        return _SIGNAL_TYPES[self]


_SIGNAL_TYPES: dict[Action, type[Signal]] = {
    Action.DISCONNECT: DisconnectSignal,
    Action.RECONNECT: ReconnectSignal,
    Action.RESUME: ResumeSignal,
}

DISCONNECT = Action.DISCONNECT
RECONNECT = Action.RECONNECT
RESUME = Action.RESUME

CONNECT_FAILURES = frozenset(
    {
        Event.CONNECT_TIMEOUT,
        Event.CONNECT_REFUSED,
        Event.CONNECT_DNS,
        Event.CONNECT_TLS,
        Event.CONNECT_TLS_CERTIFICATE,
        Event.CONNECT_ERROR,
        Event.HANDSHAKE_INVALID,
    }
)

_DEFAULT_CONNECT_FAILURES: Mapping[Event, Action] = MappingProxyType(
    {
        Event.CONNECT_TIMEOUT: RECONNECT,
        Event.CONNECT_REFUSED: RECONNECT,
        Event.CONNECT_DNS: RECONNECT,
        Event.CONNECT_TLS: RECONNECT,
        # A certificate that does not verify will not verify on the next try either.
        Event.CONNECT_TLS_CERTIFICATE: DISCONNECT,
        Event.CONNECT_ERROR: RECONNECT,
        # The same server will break the protocol the same way on the next try.
        Event.HANDSHAKE_INVALID: DISCONNECT,
    }
)


def _statuses(statuses: object) -> frozenset[int]:
    """``retry_http_statuses`` as a frozenset; a string or a status outside 100..599
    would silently never match."""
    problem = (
        "retry_http_statuses must be a set of HTTP statuses (ints from 100 to 599), "
        f"got {statuses!r}"
    )
    if not isinstance(statuses, Iterable) or isinstance(statuses, (str, bytes)):
        raise TypeError(problem)
    taken = list(statuses)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in taken):
        raise TypeError(problem)
    if not all(100 <= s <= 599 for s in taken):
        raise ValueError(problem)
    return frozenset(taken)


def _frozen(mapping: Mapping[int, Action]) -> Mapping[int, Action]:
    for code, action in mapping.items():
        if not isinstance(code, int) or isinstance(code, bool) or not 1000 <= code <= 4999:
            raise ValueError(f"close codes are integers in 1000..4999, got {code!r}")
        if not isinstance(action, Action):
            raise TypeError(f"actions are wavegate.Action values, got {action!r} for {code}")
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class ClosePolicy:
    """A close-code policy: data that turns each connection end into an action.

    Attributes:
        name: shown in reprs and logs.
        codes: close code received from the peer -> action.
        unknown_code: action for a peer close code not in ``codes``.
        no_close_frame: the TCP connection ended without a close frame.
        transport_error: an ``OSError`` mid-session.
        keepalive_timeout: no pong / heartbeat ACK in time (half-open connection).
        local_close: we closed the connection ourselves (``disconnect()``).
        connect_failures: :class:`Event` of a failed open (``CONNECT_*``) -> action.
        retry_http_statuses: handshake HTTP statuses that mean "try again" (besides 5xx).
        http_5xx: action for a 5xx handshake answer.
        http_other: action for any other non-101 handshake answer.

    Protocol errors we detect (oversized frame -> 1009, invalid UTF-8 -> 1007...) are
    looked up in ``codes`` with the code we closed with.
    """

    name: str
    codes: Mapping[int, Action]
    unknown_code: Action
    no_close_frame: Action
    transport_error: Action
    keepalive_timeout: Action
    local_close: Action = DISCONNECT
    connect_failures: Mapping[Event, Action] = field(
        default_factory=lambda: _DEFAULT_CONNECT_FAILURES
    )
    retry_http_statuses: frozenset[int] = frozenset({408, 429})
    http_5xx: Action = RECONNECT
    http_other: Action = DISCONNECT

    def __post_init__(self) -> None:
        for name in (f.name for f in fields(self) if f.type == "Action"):
            value = getattr(self, name)
            if not isinstance(value, Action):
                raise TypeError(f"{name} must be a wavegate.Action, got {value!r}")
        object.__setattr__(self, "codes", _frozen(self.codes))
        object.__setattr__(self, "retry_http_statuses", _statuses(self.retry_http_statuses))
        for event, action in self.connect_failures.items():
            if not isinstance(action, Action):
                raise TypeError(
                    f"connect_failures values must be wavegate.Action, got {action!r} for {event}"
                )
        missing = CONNECT_FAILURES - set(self.connect_failures)
        if missing:
            names = ", ".join(sorted(event.name for event in missing))
            raise ValueError(f"connect_failures lacks {names}")
        object.__setattr__(self, "connect_failures", MappingProxyType(dict(self.connect_failures)))

    def action_for_code(self, code: int) -> Action:
        """The action for a close frame with ``code`` (any int is accepted)."""
        return self.codes.get(code, self.unknown_code)

    def action_for_http_status(self, status: int) -> Action:
        """The action for a handshake answered with HTTP ``status`` instead of 101."""
        if status >= 500:
            return self.http_5xx
        if status in self.retry_http_statuses:
            return RECONNECT
        return self.http_other

    def action_for(self, event: Event, code: int | None = None) -> Action:
        """The action for any connection end: an :class:`Event` and its code, if any."""
        if event is Event.PEER_CLOSE or event is Event.PROTOCOL_ERROR:
            return self.action_for_code(1005 if code is None else code)
        if event is Event.HANDSHAKE_STATUS:
            return self.action_for_http_status(0 if code is None else code)
        if event in CONNECT_FAILURES:
            return self.connect_failures[event]
        simple = {
            Event.LOCAL_CLOSE: self.local_close,
            Event.NO_CLOSE_FRAME: self.no_close_frame,
            Event.TRANSPORT_ERROR: self.transport_error,
            Event.KEEPALIVE_TIMEOUT: self.keepalive_timeout,
        }
        return simple.get(event, DISCONNECT)

    def signal_for(
        self,
        event: Event,
        *,
        code: int | None = None,
        reason: str = "",
        initiated_locally: bool = False,
    ) -> Signal:
        """Build the signal this policy prescribes for a connection end."""
        signal_type = self.action_for(event, code).signal_type
        return signal_type(reason, code=code, event=event, initiated_locally=initiated_locally)

    def derive(
        self,
        name: str | None = None,
        *,
        codes: Mapping[int, Action] | None = None,
        **changes: object,
    ) -> ClosePolicy:
        """A new policy: this one with ``codes`` merged over its table and fields replaced.

        >>> strict = DISCORD_VOICE.derive("strict", codes={4006: DISCONNECT})
        """
        merged = {**self.codes, **(codes or {})}
        return replace(self, name=name or f"{self.name}+custom", codes=merged, **changes)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<ClosePolicy {self.name!r}: {len(self.codes)} codes>"


DISCORD_VOICE = ClosePolicy(
    name="discord-voice",
    codes={
        # resume: the server asks for it (4015) or the socket died under us
        4015: RESUME,
        1001: RESUME,
        1005: RESUME,
        1006: RESUME,
        # a new session: the old one is gone
        4006: RECONNECT,
        4009: RECONNECT,
        # client bugs or server hiccups: retry, bounded by the supervisor's retry cap
        4001: RECONNECT,
        4002: RECONNECT,
        4003: RECONNECT,
        4005: RECONNECT,
        4011: RECONNECT,
        4020: RECONNECT,
        # final: retrying cannot help, or Discord says not to
        1000: DISCONNECT,
        4004: DISCONNECT,
        4012: DISCONNECT,
        4014: DISCONNECT,
        4016: DISCONNECT,
        4017: DISCONNECT,
        4021: DISCONNECT,
        4022: DISCONNECT,
    },
    unknown_code=RECONNECT,
    no_close_frame=RESUME,
    transport_error=RESUME,
    keepalive_timeout=RESUME,
)
"""Discord voice gateway v8 (the default). Evidence: docs/policies.md."""

DISCORD_GATEWAY = ClosePolicy(
    name="discord-gateway",
    codes={
        4000: RESUME,
        4001: RESUME,
        4002: RESUME,
        4008: RESUME,
        1000: RESUME,
        1001: RESUME,
        1005: RESUME,
        1006: RESUME,
        4003: RECONNECT,
        4005: RECONNECT,
        4007: RECONNECT,
        4009: RECONNECT,
        4004: DISCONNECT,
        4010: DISCONNECT,
        4011: DISCONNECT,
        4012: DISCONNECT,
        4013: DISCONNECT,
        4014: DISCONNECT,
    },
    unknown_code=RESUME,
    no_close_frame=RESUME,
    transport_error=RESUME,
    keepalive_timeout=RESUME,
)
"""Discord main gateway v10."""

GENERIC = ClosePolicy(
    name="generic",
    codes={
        1000: DISCONNECT,
        1001: RECONNECT,
        1006: RECONNECT,
        1011: RECONNECT,
        1012: RECONNECT,
        1013: RECONNECT,
        1014: RECONNECT,
        1002: DISCONNECT,
        1003: DISCONNECT,
        1007: DISCONNECT,
        1008: DISCONNECT,
        1009: DISCONNECT,
        1010: DISCONNECT,
    },
    unknown_code=RECONNECT,
    no_close_frame=RECONNECT,
    transport_error=RECONNECT,
    keepalive_timeout=RECONNECT,
)
"""Plain RFC 6455 servers with no session to resume."""

PRESETS: Mapping[str, ClosePolicy] = MappingProxyType(
    {policy.name: policy for policy in (DISCORD_VOICE, DISCORD_GATEWAY, GENERIC)}
)
