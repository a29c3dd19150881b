"""Dead letters of cloud services: what an edge sent that the cloud refused, and why.

Cloud services serve every edge, so a message from one (possibly compromised) edge must never
crash or wedge them. Whatever they cannot accept is acknowledged, counted, logged and published
as a `schemas.status.DeadLetter` on the hub's core subject
``ef.cloud.dead-letter.{service}`` (`schemas.topics.cloud_dead_letter`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NatsClient

from cloud_bridge.errors import NATS_ERRORS
from schemas import topics
from schemas.codec import encode
from schemas.status import DeadLetter

log = logging.getLogger(__name__)

DeadLetterSink = Callable[[str, bytes, str], Awaitable[None]]
"""``await sink(subject, payload, reason)``: report one refused message."""


class CloudDeadLetters:
    """Publishes one cloud service's dead letters on its hub connection.

    Publishing is best effort: a hub that is down loses the report (the log line and the
    counter stay), never the service.

    Args:
        service: the service's name (a `schemas.base.Name`), the subject's last token.
        connection: returns the service's connected client, or None while it has none.

    """

    def __init__(self, service: str, connection: Callable[[], NatsClient | None]) -> None:
        self.service = service
        self.subject = topics.cloud_dead_letter(service)
        self.count = 0
        self._connection = connection

    async def __call__(self, subject: str, payload: bytes, reason: str) -> None:
        """Count, log and publish one refused message."""
        self.count += 1
        log.warning("%s refused a message on %r: %s", self.service, subject[:200], reason)
        letter = DeadLetter.of(service=self.service, topic=subject, reason=reason, payload=payload)
        nc = self._connection()
        if nc is None:
            return
        with contextlib.suppress(*NATS_ERRORS):
            await nc.publish(self.subject, encode(letter))
