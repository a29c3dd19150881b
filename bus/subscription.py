"""Bounded, typed inboxes for MQTT subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from bus.mqtt_wire import topic_matches


class Overflow(StrEnum):
    """What a full inbox does with the next message.

    BLOCK applies back-pressure to the connection (QoS 1 messages then wait in the broker, which
    is what a durable consumer such as the bridge wants); DROP_OLDEST keeps a live view fresh
    (dashboards, `twin watch`) and counts what it dropped.
    """

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message as a subscriber sees it.

    `response_topic` and `correlation_data` come from MQTT v5 properties when the broker speaks
    v5; on 3.1.1 they are None and request messages carry them in their body instead.
    """

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    response_topic: str | None = None
    correlation_data: bytes | None = None
    _acknowledge: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def ack(self) -> None:
        """Acknowledge a QoS 1 message on a manual-ack client (no-op otherwise).

        Until acked, the broker keeps the message for a persistent session and redelivers it
        after a reconnect, which is how the bridge loses nothing when it is killed.
        """
        if self._acknowledge is not None:
            self._acknowledge()


class Subscription:
    """An async iterator over the messages matching one topic filter, with a bounded inbox."""

    def __init__(self, topic_filter: str, *, qos: int, maxsize: int, overflow: Overflow) -> None:
        if maxsize < 1:
            raise ValueError("a subscription inbox needs room for at least one message")
        self.topic_filter = topic_filter
        self.qos = qos
        self.overflow = overflow
        self.dropped = 0
        self._inbox: asyncio.Queue[InboundMessage] = asyncio.Queue(maxsize)

    def matches(self, topic: str) -> bool:
        """True when `topic` falls under this subscription's filter."""
        return topic_matches(self.topic_filter, topic)

    async def deliver(self, message: InboundMessage) -> None:
        """Put a message in the inbox according to the overflow policy."""
        if self.overflow is Overflow.BLOCK:
            await self._inbox.put(message)
            return
        while self._inbox.full():
            self._inbox.get_nowait()
            self.dropped += 1
        self._inbox.put_nowait(message)

    def pending(self) -> int:
        """Messages waiting in the inbox."""
        return self._inbox.qsize()

    def get_nowait(self) -> InboundMessage | None:
        """The next message if one is waiting (for micro-batching), else None."""
        try:
            return self._inbox.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> InboundMessage:
        return await self._inbox.get()
