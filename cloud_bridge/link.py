"""Link health: the bridge's own probe of the hub, through the leaf, every second.

The leaf notices a black-holed uplink only after ping_interval x ping_max; the probe notices
within `probe_interval_s + probe_timeout_s` x 2, and the forwarder waits on `wait_up` instead
of hammering a dead link, so forwarding resumes as soon as one probe succeeds again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NatsClient

from bus.lifecycle import raise_if_cancelled
from cloud_bridge.errors import NATS_ERRORS
from schemas.bridge import LinkState

log = logging.getLogger(__name__)
_PROBE_SUBJECT = "$JS.cloud.API.INFO"
_FAILURES_FOR_DOWN = 2


class LinkHealth:
    """Tracks whether the hub's JetStream answers through the leaf link."""

    def __init__(
        self,
        nc: Callable[[], NatsClient],
        *,
        interval_s: float,
        timeout_s: float,
        on_change: Callable[[LinkState], None],
    ) -> None:
        self._nc = nc
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._on_change = on_change
        self.state = LinkState.UNKNOWN
        self.changed_at = time.time()
        self._up = asyncio.Event()
        self._failures = 0

    def _set(self, state: LinkState) -> None:
        if state is self.state:
            return
        log.info("uplink %s -> %s", self.state, state)
        self.state = state
        self.changed_at = time.time()
        if state is LinkState.UP:
            self._up.set()
        else:
            self._up.clear()
        self._on_change(state)

    def report_failure(self) -> None:
        """A forward failed: probe now rather than at the next tick."""
        self._failures = max(self._failures, _FAILURES_FOR_DOWN - 1)

    def report_success(self) -> None:
        """A forward succeeded: the link is up whatever the last probe said."""
        self._failures = 0
        self._set(LinkState.UP)

    async def wait_up(self, timeout: float) -> bool:
        """Wait until the link is up (or `timeout`); True if it is."""
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Probe forever; DOWN after two failures in a row, UP after one success."""
        while True:
            raise_if_cancelled()  # nats.py's wait_for may have dropped a cancel
            started = time.monotonic()
            try:
                await self._nc().request(_PROBE_SUBJECT, b"", timeout=self._timeout_s)
            except NATS_ERRORS:
                self._failures += 1
                if self._failures >= _FAILURES_FOR_DOWN:
                    self._set(LinkState.DOWN)
            else:
                self._failures = 0
                self._set(LinkState.UP)
            # While down, probe more often: resume must follow the link within a second.
            period = self._interval_s if self.state is LinkState.UP else self._interval_s / 4
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))
