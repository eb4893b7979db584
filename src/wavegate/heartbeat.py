"""Application heartbeats: ACK tracking, latency and zombie detection (pure)."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from enum import Enum

_JITTER = random.Random()
os.register_at_fork(after_in_child=_JITTER.seed)  # forked workers must not jitter alike


def first_beat_delay(interval: float, rng: random.Random = _JITTER) -> float:
    """When the first heartbeat goes after the handshake: at a random point of the first
    interval, as Discord asks of its main gateway (its voice docs say nothing; early is
    always safe). Sessions that connect together, as after an outage, then do not beat
    in step for ever: beats in step queue behind each other in both processes."""
    return interval * rng.random()


def next_beat_due(due: float, now: float, interval: float) -> float:
    """When the beat after the one due at ``due`` goes, it being ``now``: on the same
    phase, an interval after it was *due*, not after it went. A stall of the loop (a
    long garbage collection, a slow callback) delays every beat due during it; counted
    from when they went, they would all stay in step for ever after. Beats missed
    entirely are not made up, and the next beat is at least half an interval away (the
    late one's ACK has time to come back before it is judged)."""
    following = due + interval
    if following - now < interval / 2:
        following += (math.floor((now + interval / 2 - following) / interval) + 1) * interval
    return following


class Keepalive(Enum):
    """What a websocket keepalive timer does when it fires (:func:`keepalive_step`)."""

    PING = "ping"
    """Send a ping now (it replaces any earlier one)."""
    WAIT = "wait"
    """Nothing yet: the pong, or the next ping, is not due."""
    SKIP = "skip"
    """The application holds reading (ACKs and pongs wait unread): no ping, and the
    one in flight, if any, no longer counts."""
    EXPIRED = "expired"
    """The ping in flight got no pong by its deadline: the connection is dead."""


def keepalive_step(
    now: float,
    *,
    sent: float | None,
    answered: bool,
    held: bool,
    interval: float,
    timeout: float,
) -> tuple[Keepalive, float]:
    """What the keepalive's one timer does when it fires at ``now``, and when it fires
    next. ``sent`` is when the ping in flight went (``None``: none), ``answered``
    whether its pong came. Pings go an ``interval`` apart; each must be answered
    within ``timeout``, and one not answered yet when the next is due holds the next
    back (it is looked at again an interval later, or at its deadline if sooner). One
    timer and no task: a ping's objects live until the next ping replaces them, never
    longer (thousands of connections' worth of objects living ``timeout`` each would
    trigger full garbage collections)."""
    if sent is not None and not answered:
        deadline = sent + timeout
        if now < deadline:
            return Keepalive.WAIT, min(deadline, now + interval)
        if not held:
            return Keepalive.EXPIRED, now
        return Keepalive.SKIP, now + interval
    if sent is not None and now < sent + interval:
        return Keepalive.WAIT, sent + interval
    if held:
        return Keepalive.SKIP, now + interval
    return Keepalive.PING, now + min(interval, timeout)


class HeartbeatTracker:
    """Decides when a connection is a zombie.

    Call :meth:`beat` at each heartbeat tick: it returns the nonce to send, or
    ``None`` when the connection is a zombie (``max_missed`` beats in a row got no ACK,
    or nothing at all arrived for ``silence_factor`` intervals). Call :meth:`ack` for
    each ACK and :meth:`frame_received` for every frame.
    """

    def __init__(
        self,
        interval: float,
        *,
        max_missed: int = 2,
        silence_factor: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be positive, got {interval!r}")
        if max_missed < 1:
            raise ValueError("max_missed must be at least 1")
        self.interval = interval
        self.max_missed = max_missed
        self.silence_factor = silence_factor
        self._clock = clock
        self._pending: tuple[int, float] | None = None
        self.missed = 0
        self._last_frame = clock()
        self._held = False
        self._nonce = int(clock() * 1000) % (1 << 52)

    def frame_received(self) -> None:
        """Any frame arrived: the peer is alive."""
        self._last_frame = self._clock()

    def hold(self) -> None:
        """We stopped reading on purpose (backpressure): ACKs cannot arrive, so nothing
        counts against the peer until :meth:`release`."""
        self._held = True

    def release(self) -> None:
        """Reading again: judge the peer from now on, as if it had just spoken."""
        self._held = False
        self._pending = None
        self.missed = 0
        self._last_frame = self._clock()

    def zombie_reason(self) -> str | None:
        """Why the connection counts as dead, or ``None`` while it is healthy (or held)."""
        if self._held:
            return None
        if self.missed >= self.max_missed:
            return f"{self.missed} heartbeats in a row got no ACK"
        silent = self._clock() - self._last_frame
        if silent > self.silence_factor * self.interval:
            return f"nothing received for {silent:.2f}s"
        return None

    def beat(self) -> int | None:
        """The nonce for the next heartbeat, or ``None`` if the connection is a zombie."""
        if self._pending is not None and not self._held:
            self.missed += 1
        if self.zombie_reason() is not None:
            return None
        # JSON-safe nonces below 2**53 (Discord rejects larger ones).
        self._nonce = (self._nonce + 1) % (1 << 52)
        self._pending = (self._nonce, self._clock())
        return self._nonce

    def ack(self, nonce: object) -> float | None:
        """Record an ACK; the round trip in seconds, or ``None`` for an unexpected nonce."""
        self.frame_received()
        if self._pending is None or nonce != self._pending[0]:
            return None
        latency = self._clock() - self._pending[1]
        self._pending = None
        self.missed = 0
        return latency
