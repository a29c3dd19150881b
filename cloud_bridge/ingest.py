"""Ingest: local MQTT -> the edge's durable class queues, acknowledged only once stored.

The MQTT session is persistent with manual acks, so whatever was not yet stored when the bridge
dies is redelivered by the broker; the edge streams drop those re-stores by `Nats-Msg-Id`.
Payloads above the link's max payload are cut into chunks here, each stored (and later
forwarded) as its own message with the whole payload's sha256, and put back together by the
cloud consumer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.js import JetStreamContext

from bus.subscription import InboundMessage, Subscription
from cloud_bridge import headers
from cloud_bridge.errors import NATS_ERRORS
from cloud_bridge.routes import class_of, message_id_of, queue_subject
from schemas.errors import InvalidName
from schemas.topics import TrafficClass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Part:
    owner: int
    last: bool
    subject: str
    payload: bytes
    headers: dict[str, str]


def split(
    subject: str, payload: bytes, base: dict[str, str], chunk_bytes: int
) -> list[tuple[str, bytes, dict[str, str]]]:
    """One queue entry per chunk (a single entry when the payload fits in one)."""
    if len(payload) <= chunk_bytes:
        return [(subject, payload, base)]
    count = (len(payload) + chunk_bytes - 1) // chunk_bytes
    digest = hashlib.sha256(payload).hexdigest()
    whole_id = base[headers.MSG_ID]
    return [
        (
            subject,
            payload[i * chunk_bytes : (i + 1) * chunk_bytes],
            base
            | {
                headers.MSG_ID: f"{whole_id}.c{i}",
                headers.CHUNK: f"{i}/{count}",
                headers.CHUNK_OF: whole_id,
                headers.SHA256: digest,
            },
        )
        for i in range(count)
    ]


class Ingest:
    """Moves one MQTT subscription's messages into the edge queues, in order, losing none.

    Args:
        edge: this edge's id.
        js: JetStream context in the edge's own domain (the leaf).
        chunk_bytes: largest payload stored as one message.
        max_payload_bytes: largest payload stored at all; a bigger one goes to `on_invalid`.
        backoff_max_s: cap of the retry back-off while the leaf is unavailable.
        on_stored: told which class received messages (wakes the forwarder).
        on_invalid: gets messages whose topic cannot become a subject, or whose payload is
            over `max_payload_bytes`, with the reason (dead-lettered).

    """

    def __init__(
        self,
        *,
        edge: str,
        js: Callable[[], JetStreamContext],
        chunk_bytes: int,
        max_payload_bytes: int,
        backoff_max_s: float,
        on_stored: Callable[[TrafficClass], None],
        on_invalid: Callable[[InboundMessage, str], Awaitable[None]],
    ) -> None:
        self._edge = edge
        self._js = js
        self._chunk_bytes = chunk_bytes
        self._max_payload_bytes = max_payload_bytes
        self._backoff_max_s = backoff_max_s
        self._on_stored = on_stored
        self._on_invalid = on_invalid
        self.ingested = 0

    async def run(self, sub: Subscription, batch: int) -> None:
        """Drain `sub` forever, micro-batching what is already waiting."""
        async for first in sub:
            messages = [first]
            while len(messages) < batch and (more := sub.get_nowait()) is not None:
                messages.append(more)
            await self.store(messages)

    def _parts(
        self, messages: list[InboundMessage]
    ) -> tuple[list[_Part], list[tuple[InboundMessage, str]]]:
        parts: list[_Part] = []
        invalid: list[tuple[InboundMessage, str]] = []
        for index, message in enumerate(messages):
            if len(message.payload) > self._max_payload_bytes:
                invalid.append(
                    (
                        message,
                        f"payload of {len(message.payload)} bytes is over the bridge's limit "
                        f"of {self._max_payload_bytes} bytes",
                    )
                )
                continue
            try:
                subject = queue_subject(self._edge, message.topic)
            except InvalidName as exc:
                invalid.append((message, str(exc)))
                continue
            msg_id = (
                message_id_of(message.payload)
                or hashlib.sha256(message.topic.encode() + b"\0" + message.payload).hexdigest()
            )
            base = {headers.MSG_ID: msg_id, headers.TOPIC: message.topic}
            pieces = split(subject, message.payload, base, self._chunk_bytes)
            parts += [
                _Part(index, i == len(pieces) - 1, s, p, h) for i, (s, p, h) in enumerate(pieces)
            ]
        return parts, invalid

    async def store(self, messages: list[InboundMessage]) -> None:
        """Store `messages` in order and ack each to the broker once all its parts are stored.

        A failed publish is retried with everything after it (same message ids), so the queue
        keeps the MQTT order even when the leaf restarts in the middle of a batch.
        """
        pending, invalid = self._parts(messages)
        backoff = 0.05
        while pending:
            js = self._js()
            outcomes = await asyncio.gather(
                *(js.publish(p.subject, p.payload, headers=p.headers) for p in pending),
                return_exceptions=True,
            )
            done = 0
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, NATS_ERRORS):
                        raise outcome
                    break
                done += 1
            classes = set()
            for part in pending[:done]:
                if part.last:
                    messages[part.owner].ack()
                    self.ingested += 1
                classes.add(class_of(messages[part.owner].topic))
            for traffic_class in classes:
                self._on_stored(traffic_class)
            pending = pending[done:]
            if pending:
                log.warning(
                    "edge queue unavailable (%s); retrying %d", outcomes[done], len(pending)
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max_s)
        for message, reason in invalid:
            await self._on_invalid(message, reason)
            message.ack()
