"""Pure parts of the supervisor: backoff and heartbeat tracking, on a fake clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wavegate import Backoff, RetrySchedule
from wavegate.heartbeat import (
    HeartbeatTracker,
    Keepalive,
    first_beat_delay,
    keepalive_step,
    next_beat_due,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


backoffs = st.builds(
    Backoff,
    base=st.floats(0.001, 10),
    factor=st.floats(1, 4),
    cap=st.floats(0.001, 120),
    max_attempts=st.none() | st.integers(1, 30),
    reset_after=st.floats(0, 100),
)


@given(backoff=backoffs, seed=st.integers(0, 2**32))
def test_delays_stay_within_the_full_jitter_bounds_and_the_cap(backoff: Backoff, seed: int) -> None:
    schedule = RetrySchedule(backoff, clock=FakeClock(), rng=random.Random(seed))
    for attempt in range(40):
        delay = schedule.next_delay()
        if backoff.max_attempts is not None and attempt >= backoff.max_attempts:
            assert delay is None
            continue
        assert delay is not None
        assert 0 <= delay <= min(backoff.cap, backoff.base * backoff.factor**attempt) + 1e-9
        assert delay <= backoff.cap + 1e-9


@given(attempts=st.integers(1, 50), seed=st.integers(0, 2**32))
def test_attempts_are_capped_exactly(attempts: int, seed: int) -> None:
    schedule = RetrySchedule(
        Backoff(max_attempts=attempts), clock=FakeClock(), rng=random.Random(seed)
    )
    delays = [schedule.next_delay() for _ in range(attempts + 5)]
    assert all(delay is not None for delay in delays[:attempts])
    assert delays[attempts:] == [None] * 5


def test_ceilings_grow_exponentially_then_hold_at_the_cap() -> None:
    backoff = Backoff(base=0.5, factor=2, cap=30)
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.ceiling(10_000) == 30  # no overflow


def test_jitter_is_spread_over_the_whole_range() -> None:
    rng = random.Random(7)
    backoff = Backoff(base=8, factor=1, cap=8, max_attempts=None)
    delays = []
    for _ in range(4000):
        schedule = RetrySchedule(backoff, clock=FakeClock(), rng=rng)
        delay = schedule.next_delay()
        assert delay is not None
        delays.append(delay)
    quarters = [sum(1 for delay in delays if q * 2 <= delay < (q + 1) * 2) for q in range(4)]
    assert all(850 < count < 1150 for count in quarters), quarters  # uniform, not clustered


def test_count_resets_only_after_a_healthy_period() -> None:
    clock = FakeClock()
    schedule = RetrySchedule(
        Backoff(reset_after=30, max_attempts=None), clock=clock, rng=random.Random(1)
    )
    for _ in range(5):
        schedule.next_delay()
    assert schedule.attempts == 5
    schedule.healthy()
    clock.now += 29  # not long enough: a flapping connection keeps backing off
    schedule.next_delay()
    assert schedule.attempts == 6
    schedule.healthy()
    clock.now += 30
    schedule.next_delay()
    assert schedule.attempts == 1


def test_only_attempts_that_never_got_a_usable_connection_count_towards_giving_up() -> None:
    # Found by a new-user trial: a server recycling connections more often than
    # reset_after made a session give up, though every resume worked.
    clock = FakeClock()
    schedule = RetrySchedule(
        Backoff(reset_after=10, max_attempts=3), clock=clock, rng=random.Random(1)
    )
    for _ in range(20):  # each connection usable, for less than reset_after
        assert schedule.next_delay() is not None
        schedule.healthy()
        clock.now += 1
    assert schedule.attempts == 20  # still backed off from: no hammering
    assert schedule.failures == 0
    assert [schedule.next_delay() is not None for _ in range(4)] == [True, True, True, False]
    assert schedule.failures == 3


def test_with_the_defaults_a_connection_recycled_every_25_s_is_retried_as_a_first_retry() -> None:
    # A load balancer's recycling is not a flapping server: 25 s of use resets the count
    # (it took 30 s), so each retry is the first since a healthy connection.
    clock = FakeClock()
    schedule = RetrySchedule(Backoff(), clock=clock, rng=random.Random(1))
    for _ in range(20):
        schedule.healthy()
        clock.now += 25
        assert schedule.next_delay() is not None
        assert schedule.attempts == 1


@pytest.mark.parametrize(
    "options", [{"base": 0}, {"cap": -1}, {"factor": 0.5}, {"max_attempts": 0}, {"reset_after": -1}]
)
def test_invalid_backoff_is_rejected(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        Backoff(**options)  # type: ignore[arg-type]


def test_acked_beats_measure_latency_and_never_make_a_zombie() -> None:
    clock = FakeClock()
    tracker = HeartbeatTracker(1.0, clock=clock)
    for _ in range(10):
        clock.now += 1
        nonce = tracker.beat()
        assert nonce is not None
        clock.now += 0.02
        assert tracker.ack(nonce) == pytest.approx(0.02)
    assert tracker.zombie_reason() is None


def test_two_missed_acks_make_a_zombie() -> None:
    clock = FakeClock()
    tracker = HeartbeatTracker(1.0, max_missed=2, silence_factor=100, clock=clock)
    clock.now += 1
    assert tracker.beat() is not None
    clock.now += 1
    assert tracker.beat() is not None  # one missed
    clock.now += 1
    assert tracker.beat() is None  # two missed: zombie
    assert "2 heartbeats" in (tracker.zombie_reason() or "")


def test_silence_makes_a_zombie_even_before_the_first_ack() -> None:
    clock = FakeClock()
    tracker = HeartbeatTracker(1.0, max_missed=10, clock=clock)
    clock.now += 2.5
    assert tracker.beat() is None
    assert "nothing received" in (tracker.zombie_reason() or "")


def test_frames_keep_a_connection_alive_but_acks_still_count() -> None:
    clock = FakeClock()
    tracker = HeartbeatTracker(1.0, max_missed=3, clock=clock)
    for _ in range(2):
        clock.now += 1
        tracker.frame_received()
        assert tracker.beat() is not None
    clock.now += 1
    tracker.frame_received()
    assert tracker.beat() is not None
    clock.now += 1
    tracker.frame_received()
    assert tracker.beat() is None  # traffic flows but ACKs never come


def test_a_wrong_nonce_is_not_an_ack() -> None:
    clock = FakeClock()
    tracker = HeartbeatTracker(1.0, clock=clock)
    nonce = tracker.beat()
    assert nonce is not None
    assert tracker.ack(nonce + 1) is None
    assert tracker.ack(nonce) is not None


@given(st.integers(0, 10_000))
def test_nonces_are_json_safe(start: int) -> None:
    clock = FakeClock()
    clock.now = float(start)
    tracker = HeartbeatTracker(1.0, clock=clock)
    nonce = tracker.beat()
    assert nonce is not None
    assert 0 <= nonce < 2**53


@pytest.mark.parametrize("interval", [0.05, 5.0, 41.25])
def test_the_first_beat_comes_at_a_random_point_of_the_first_interval(interval: float) -> None:
    rng = random.Random(13)
    delays = [first_beat_delay(interval, rng) for _ in range(2000)]
    assert all(0 <= delay < interval for delay in delays)
    # Spread over the whole interval: sessions that connect together do not beat in step.
    quarters = [
        sum(1 for d in delays if q * interval / 4 <= d < (q + 1) * interval / 4) for q in range(4)
    ]
    assert all(400 <= count <= 600 for count in quarters), quarters


@pytest.mark.parametrize(
    ("due", "now", "expected"),
    [
        (10.0, 10.0, 15.0),  # on time
        (10.0, 10.3, 15.0),  # late: still an interval after it was due, not after it went
        (10.0, 12.4, 15.0),  # late by almost half an interval
        (10.0, 12.6, 20.0),  # later: the next on the phase would come too soon after it
        (10.0, 14.9, 20.0),  # very late
        (10.0, 15.0, 20.0),  # a whole beat missed: not made up
        (10.0, 21.0, 25.0),  # a stall of over two intervals: the next on the phase
        (10.0, 23.5, 30.0),  # ... at least half an interval away
        (10.0, 9.0, 15.0),  # early (a clock that is not quite the loop's)
    ],
)
def test_beats_keep_their_phase_through_a_stall(due: float, now: float, expected: float) -> None:
    assert next_beat_due(due, now, 5.0) == pytest.approx(expected)


PING, WAIT, SKIP, EXPIRED = Keepalive.PING, Keepalive.WAIT, Keepalive.SKIP, Keepalive.EXPIRED


@pytest.mark.parametrize(
    ("now", "sent", "answered", "held", "interval", "timeout", "expected"),
    [
        # The first ping, an interval after the connection opened.
        (20.0, None, False, False, 20.0, 20.0, (PING, 40.0)),
        # Answered: the next ping an interval after the last went, its deadline with it.
        (40.0, 20.0, True, False, 20.0, 20.0, (PING, 60.0)),
        # Not answered by its deadline: the connection is dead.
        (40.0, 20.0, False, False, 20.0, 20.0, (EXPIRED, 40.0)),
        # ... unless the application holds reading: the pong may wait unread.
        (40.0, 20.0, False, True, 20.0, 20.0, (SKIP, 60.0)),
        # Held when a ping is due: none sent, looked at again an interval later.
        (40.0, 20.0, True, True, 20.0, 20.0, (SKIP, 60.0)),
        (20.0, None, False, True, 20.0, 20.0, (SKIP, 40.0)),
        # Held before the deadline or before the next ping is due: nothing to do yet.
        (25.0, 20.0, False, True, 20.0, 20.0, (WAIT, 40.0)),
        (25.0, 20.0, True, True, 20.0, 20.0, (WAIT, 40.0)),
        # Pings more often than their timeout: the next one goes once this one is
        # answered, and waits for it (until its deadline) if it is not yet.
        (25.0, 20.0, True, False, 5.0, 20.0, (PING, 30.0)),
        # ... looked at again an interval later (a pong that comes meanwhile delays
        # the next ping by less than an interval), or at its deadline if sooner.
        (25.0, 20.0, False, False, 5.0, 20.0, (WAIT, 30.0)),
        (30.0, 20.0, True, False, 5.0, 20.0, (PING, 35.0)),
        (35.0, 20.0, False, False, 5.0, 20.0, (WAIT, 40.0)),
        (40.0, 20.0, False, False, 5.0, 20.0, (EXPIRED, 40.0)),
        # A timeout shorter than the interval: the deadline first, then the next ping.
        (25.0, 20.0, True, False, 20.0, 5.0, (WAIT, 40.0)),
        (25.0, 20.0, False, False, 20.0, 5.0, (EXPIRED, 25.0)),
        # Late (a stalled loop): a ping answered meanwhile counts, the next goes now.
        (47.0, 20.0, True, False, 20.0, 20.0, (PING, 67.0)),
    ],
)
def test_the_keepalive_timer_decides_alone(
    now: float,
    sent: float | None,
    answered: bool,
    held: bool,
    interval: float,
    timeout: float,
    expected: tuple[Keepalive, float],
) -> None:
    step = keepalive_step(
        now, sent=sent, answered=answered, held=held, interval=interval, timeout=timeout
    )
    assert step[0] is expected[0]
    assert step[1] == pytest.approx(expected[1])
