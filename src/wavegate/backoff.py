"""Retry delays: exponential backoff with full jitter, a cap and a reset (pure).

The clock and the random source are injectable, so tests run with a fake clock and a
seeded generator and never sleep.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import _checks as checks


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before each retry.

    The delay before retry ``n`` (0-based) is uniform in
    ``[0, min(cap, base * factor**n)]`` ("full jitter"), so many clients that failed
    together do not retry together.

    Attributes:
        base: the ceiling of the first delay, in seconds.
        factor: growth of the ceiling per failed attempt.
        cap: the largest ceiling.
        max_attempts: consecutive attempts allowed that never got a usable
            connection, before giving up (``None``: never give up). An attempt that
            got one, however short its life, does not count: a server that recycles
            connections is followed for ever (backed off from while it flaps).
        reset_after: seconds a connection must stay usable before the delays start
            again from the first (and a resume after it is immediate): shorter-lived
            connections are a flapping server's, backed off from.
    """

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    max_attempts: int | None = 10
    reset_after: float = 10.0

    def __post_init__(self) -> None:
        checks.count("max_attempts", self.max_attempts, 1, none=True)
        numbers = {
            "base": checks.positive("base", self.base),
            "cap": checks.positive("cap", self.cap),
            "factor": checks.at_least("factor", self.factor, 1),
            "reset_after": checks.at_least("reset_after", self.reset_after, 0, infinite=True),
        }
        for name, number in numbers.items():
            object.__setattr__(self, name, number)

    def ceiling(self, attempt: int) -> float:
        """The largest delay before retry number ``attempt`` (0-based)."""
        # Compare logarithms: factor**attempt overflows a float, and attempts grow
        # without bound while a server recycles connections (only failures are capped).
        if self.factor == 1 or attempt * math.log(self.factor) < math.log(self.cap / self.base):
            return min(self.cap, self.base * self.factor**attempt)
        return self.cap


_JITTER = random.Random()
os.register_at_fork(after_in_child=_JITTER.seed)  # forked workers must not back off alike
"""The jitter of every schedule without its own generator: a Random holds 2.5 KiB of
state, a real share of a session's memory when a process runs thousands of them."""


class RetrySchedule:
    """Counts retries and hands out the delay before the next attempt.

    Call :meth:`healthy` when a connection becomes usable: that ends a run of
    :attr:`failures` at once, and the delays start again from the first only if it
    then stays up for ``backoff.reset_after`` seconds (checked at the next retry).
    """

    def __init__(
        self,
        backoff: Backoff,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.backoff = backoff
        self._clock = clock
        self._rng = rng or _JITTER
        self._attempts = 0
        self._failures = 0
        self._healthy_since: float | None = None

    @property
    def attempts(self) -> int:
        """Retries since a connection last stayed usable for ``reset_after`` (the
        delays grow with it)."""
        return self._attempts

    @property
    def failures(self) -> int:
        """Retries since a connection was last usable at all (``max_attempts`` bounds
        it)."""
        return self._failures

    def healthy(self) -> None:
        """A connection is usable: the failures end, the reset clock starts."""
        self._healthy_since = self._clock()
        self._failures = 0

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when attempts are spent."""
        if (
            self._healthy_since is not None
            and self._clock() - self._healthy_since >= self.backoff.reset_after
        ):
            self._attempts = 0
        self._healthy_since = None
        limit = self.backoff.max_attempts
        if limit is not None and self._failures >= limit:
            return None
        delay = self._rng.uniform(0, self.backoff.ceiling(self._attempts))
        self._attempts += 1
        self._failures += 1
        return delay
