"""A circuit breaker for calls to the cloud: a dead or slow cloud costs nothing per request.

Sedna retries a dead cloud 5 x 3 s per hard example. Here, after `failures` consecutive
failures the breaker opens and requests skip the cloud at once; after `reset_s` one trial
request is let through (half-open): success closes the breaker, failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    """Where the breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures and decides whether the next call may go out."""

    def __init__(
        self,
        *,
        failures: int = 3,
        reset_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._trial_out = False
        self.state = BreakerState.CLOSED
        self.opened = 0

    def allow(self) -> bool:
        """True when a call may go to the cloud now."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and self._clock() - self._opened_at >= self._reset_s:
            self.state = BreakerState.HALF_OPEN
            self._trial_out = False
        if self.state is BreakerState.HALF_OPEN and not self._trial_out:
            self._trial_out = True
            return True
        return False

    def success(self) -> None:
        """A call succeeded in time."""
        self._failures = 0
        self.state = BreakerState.CLOSED

    def failure(self) -> None:
        """A call failed or missed its deadline."""
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            if self.state is not BreakerState.OPEN:
                self.opened += 1
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()
