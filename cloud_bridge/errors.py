"""Errors of the cloud bridge."""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import nats.js.errors

from schemas.errors import EdgefabricError


class BridgeError(EdgefabricError):
    """Base of every bridge error."""


class LinkDown(BridgeError):
    """The uplink to the cloud hub is down; messages stay queued on the edge."""


class IntegrityError(BridgeError):
    """A reassembled chunked payload does not match the sha256 it was sent with."""

    def __init__(self, message_id: str, expected: str, actual: str) -> None:
        super().__init__(f"payload {message_id}: sha256 {actual} != sent {expected}")
        self.message_id = message_id
        self.expected = expected
        self.actual = actual


class MalformedChunk(BridgeError):
    """A message's chunk headers cannot be part of any payload (missing, garbled, inconsistent)."""


NATS_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    asyncio.TimeoutError,
    nats.js.errors.Error,
)
"""What a NATS call raises when the link, the leaf or the hub is unavailable: retried."""


async def log_nats_error(exc: Exception) -> None:
    """Log nats.py's connection errors instead of printing their tracebacks.

    A lost or refused connection is expected while a link is down; the client reconnects.
    """
    logging.getLogger("cloud_bridge.nats").debug("nats connection: %r", exc)
