"""The cloud side of the uplink: the hub stream and an exactly-once consumer of it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from cloud_bridge import headers
from cloud_bridge.dedupe import EdgeSequenceTracker
from cloud_bridge.settings import CLOUD_STREAM, CloudStreamSettings
from schemas import topics
from schemas.topics import TrafficClass


async def ensure_cloud_stream(nc: NatsClient, settings: CloudStreamSettings) -> None:
    """Create (or update) the hub's uplink stream that every edge forwards into."""
    js = nc.jetstream()
    config = StreamConfig(
        name=CLOUD_STREAM,
        subjects=[topics.uplink_filter()],
        storage=StorageType.FILE,
        max_bytes=settings.max_bytes,
        duplicate_window=settings.duplicate_window_s,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)


@dataclass(frozen=True, slots=True)
class UplinkMessage:
    """A message that arrived from an edge, as a cloud service sees it."""

    edge: str
    traffic_class: TrafficClass
    subject: str
    topic: str
    payload: bytes
    edge_sequence: int
    message_id: str


class CloudConsumer:
    """Reads the uplink stream through a durable consumer, each edge message exactly once.

    JetStream's duplicate window catches quick retries; the per-edge sequence tracker catches
    re-sends after any outage. A message is acknowledged when the caller asks for the next one,
    i.e. after it was handled.

    Args:
        hub_url: the hub's client URL.
        durable: consumer name; two consumers with one name share the work.
        filter_subject: which uplink subjects (see `schemas.topics.uplink_filter`).

    """

    def __init__(
        self,
        hub_url: str,
        *,
        durable: str,
        filter_subject: str | None = None,
        stream: CloudStreamSettings | None = None,
        batch: int = 256,
    ) -> None:
        self._hub_url = hub_url
        self._durable = durable
        self._filter = filter_subject or topics.uplink_filter()
        self._stream_settings = stream or CloudStreamSettings()
        self._batch = batch
        self._nc: NatsClient | None = None
        self.tracker = EdgeSequenceTracker()
        self.received = 0
        self.duplicates = 0

    async def __aenter__(self) -> Self:
        self._nc = await nats.connect(
            self._hub_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
        )
        await ensure_cloud_stream(self._nc, self._stream_settings)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await nc.close()

    async def messages(self) -> AsyncIterator[UplinkMessage]:
        """Every new uplink message, in stream order, duplicates removed."""
        assert self._nc is not None, "enter the consumer first"
        js = self._nc.jetstream()
        psub = await js.pull_subscribe(
            self._filter,
            durable=self._durable,
            stream=CLOUD_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1),
        )
        while True:
            try:
                batch = await psub.fetch(self._batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for msg in batch:
                hdrs = msg.headers or {}
                edge = hdrs.get(headers.EDGE, "")
                sequence = int(hdrs.get(headers.EDGE_SEQ, "0") or 0)
                if edge and sequence and not self.tracker.first_time(edge, sequence):
                    self.duplicates += 1
                    await msg.ack()
                    continue
                parts = msg.subject.split(".")
                self.received += 1
                yield UplinkMessage(
                    edge=edge or parts[2],
                    traffic_class=TrafficClass(parts[3]),
                    subject=msg.subject,
                    topic=hdrs.get(headers.TOPIC, ""),
                    payload=msg.data,
                    edge_sequence=sequence,
                    message_id=hdrs.get(headers.MSG_ID, ""),
                )
                with contextlib.suppress(nats.errors.Error):
                    await msg.ack()
