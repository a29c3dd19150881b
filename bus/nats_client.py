"""NATS connections as every edgefabric service opens them.

Reconnect forever with a short wait (a leaf or hub restart is routine at the edge), and
report connection errors through our logger at DEBUG: nats-py's default error callback logs
every failed reconnect attempt at ERROR with a traceback, which buries real problems during
an ordinary outage. Link state is published by the bridge, not inferred from logs.
"""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client as NatsClient

log = logging.getLogger(__name__)


async def connect(
    url: str, *, name: str, connect_timeout: float = 2.0, inbox_prefix: str = "_INBOX"
) -> NatsClient:
    """Connect to `url`; later outages are ridden out by nats-py's reconnect loop.

    `inbox_prefix` must be the edge's own (`bus.nats_server.edge_inbox_prefix`) on a leaf
    whose hub confines each edge to its subjects, or request replies never come back.

    Raises:
        nats.errors.NoServersError: nothing answered at start-up within the timeout.
    """

    async def on_error(exc: Exception) -> None:
        log.debug("nats %s: %s", name, exc)

    async def on_disconnect() -> None:
        log.info("nats %s: disconnected from %s", name, url)

    async def on_reconnect() -> None:
        log.info("nats %s: reconnected to %s", name, url)

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        connect_timeout=connect_timeout,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        inbox_prefix=inbox_prefix,
    )
