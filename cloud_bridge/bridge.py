"""The edge side of the cloud bridge: MQTT -> durable edge queue -> cloud JetStream.

Two loops with one job each:

* ingest: takes the topics that leave the site from local MQTT, writes each into the edge's
  JetStream stream (on disk, in the leaf's own domain) and only then acknowledges it to the
  broker, so a bridge killed at any point loses nothing (the broker redelivers what was not
  acknowledged to the persistent session);
* forward: reads the queue in order and publishes to the hub's stream through the leaf link,
  with the same `Nats-Msg-Id` on every retry. The bridge owns the retry timing (short, capped
  back-off) instead of JetStream's stream sourcing, which waited ~35-40 s after a link came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from types import TracebackType
from typing import Self

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, StorageType, StreamConfig

from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from bus.subscription import InboundMessage, Subscription
from cloud_bridge import headers
from cloud_bridge.routes import UPLINK_ROUTES, message_id_of, queue_subject
from cloud_bridge.settings import EDGE_STREAM, BridgeSettings
from schemas import topics
from schemas.codec import encode
from schemas.errors import InvalidName
from schemas.status import DeadLetter

log = logging.getLogger(__name__)
SERVICE = "bridge"
_FORWARDER = "ef-forwarder"
_NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError, nats.js.errors.Error)


class CloudBridge:
    """Store-and-forward from this edge's MQTT to the cloud hub, nothing lost or duplicated.

    Args:
        settings: queue budget, batch size and timeouts.
        bus: an MQTT client with ``clean_session=False`` and ``manual_ack=True``, so the broker
            keeps what the bridge has not yet made durable.

    """

    def __init__(self, settings: BridgeSettings, *, bus: MqttClient) -> None:
        self.settings = settings
        self._bus = bus
        self._nc: NatsClient | None = None
        self._tasks = ServiceTasks(SERVICE)
        self.ingested = 0
        self.forwarded = 0
        self.rejected = 0
        self.link_up = False

    async def __aenter__(self) -> Self:
        self._nc = await nats.connect(
            self.settings.leaf_url,
            name=f"edgefabric-bridge-{self.settings.edge_id}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            connect_timeout=2,
            allow_reconnect=True,
        )
        try:
            await self._ensure_edge_stream()
            stack = contextlib.AsyncExitStack()
            self._subscriptions: list[Subscription] = []
            for topic_filter, _ in UPLINK_ROUTES:
                sub = await stack.enter_async_context(self._bus.subscribe(topic_filter))
                self._subscriptions.append(sub)
            self._stack = stack
            await self._tasks.__aenter__()
            for sub in self._subscriptions:
                self._tasks.spawn(self._ingest(sub), f"ingest[{sub.topic_filter}]")
            self._tasks.spawn(self._forward(), "forward")
        except BaseException:
            await self._nc.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._tasks.__aexit__(exc_type, exc, tb)
            await self._stack.aclose()
        finally:
            nc, self._nc = self._nc, None
            if nc is not None:
                await nc.close()

    def _js_edge(self) -> nats.js.JetStreamContext:
        assert self._nc is not None
        return self._nc.jetstream(domain=self.settings.edge_id)

    def _js_cloud(self) -> nats.js.JetStreamContext:
        assert self._nc is not None
        return self._nc.jetstream(domain="cloud", timeout=self.settings.publish_timeout_s)

    async def _ensure_edge_stream(self) -> None:
        config = StreamConfig(
            name=EDGE_STREAM,
            subjects=[topics.edge_queue_filter(self.settings.edge_id)],
            storage=StorageType.FILE,
            max_bytes=self.settings.max_bytes,
            max_age=self.settings.max_age_s,
            discard=DiscardPolicy.OLD,
            duplicate_window=600,
        )
        js = self._js_edge()
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await js.update_stream(config)

    # ---- ingest ----------------------------------------------------------------------------

    async def _ingest(self, sub: Subscription) -> None:
        async for first in sub:
            batch = [first]
            while len(batch) < self.settings.batch and (more := sub.get_nowait()) is not None:
                batch.append(more)
            await self._store(batch)

    async def _store(self, batch: list[InboundMessage]) -> None:
        entries: list[tuple[InboundMessage, str, str]] = []
        for message in batch:
            try:
                subject = queue_subject(self.settings.edge_id, message.topic)
            except InvalidName as exc:
                await self._dead_letter(message, str(exc))
                message.ack()
                continue
            msg_id = message_id_of(message.payload) or hashlib.sha256(
                message.topic.encode() + b"\0" + message.payload
            ).hexdigest()
            entries.append((message, subject, msg_id))
        backoff = 0.05
        while entries:
            js = self._js_edge()
            results = await asyncio.gather(
                *(
                    js.publish(subject, m.payload,
                               headers={headers.MSG_ID: msg_id, headers.TOPIC: m.topic})
                    for m, subject, msg_id in entries
                ),
                return_exceptions=True,
            )
            failed = []
            for entry, outcome in zip(entries, results, strict=True):
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, _NATS_ERRORS):
                        raise outcome
                    failed.append(entry)
                else:
                    entry[0].ack()
                    self.ingested += 1
            entries = failed
            if entries:
                log.warning("edge queue unavailable; retrying %d messages", len(entries))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_backoff_max_s)

    async def _dead_letter(self, message: InboundMessage, reason: str) -> None:
        self.rejected += 1
        letter = DeadLetter.of(service=SERVICE, topic=message.topic, reason=reason,
                               payload=message.payload)
        await self._bus.publish(topics.dead_letter(SERVICE), encode(letter))

    # ---- forward ---------------------------------------------------------------------------

    async def _forward(self) -> None:
        edge = self.settings.edge_id
        while True:
            try:
                psub = await self._js_edge().pull_subscribe(
                    topics.edge_queue_filter(edge),
                    durable=_FORWARDER,
                    stream=EDGE_STREAM,
                    config=ConsumerConfig(ack_policy=AckPolicy.ALL, ack_wait=30,
                                          max_ack_pending=-1),
                )
                break
            except _NATS_ERRORS as exc:
                log.warning("cannot open the edge queue yet: %s", exc)
                await asyncio.sleep(0.5)
        while True:
            try:
                msgs = await psub.fetch(self.settings.batch, timeout=1.0)
            except _NATS_ERRORS:
                continue
            await self._send(msgs)

    async def _send(self, msgs: list[Msg]) -> None:
        """Publish a batch to the cloud in order; retry the unconfirmed tail until it lands."""
        edge = self.settings.edge_id
        pending = msgs
        backoff = 0.05
        while pending:
            js = self._js_cloud()
            outcomes = await asyncio.gather(
                *(
                    js.publish(
                        topics.uplink_from_queue(edge, m.subject),
                        m.data,
                        headers={
                            headers.MSG_ID: (m.headers or {}).get(headers.MSG_ID, ""),
                            headers.EDGE: edge,
                            headers.EDGE_SEQ: str(m.metadata.sequence.stream),
                            headers.TOPIC: (m.headers or {}).get(headers.TOPIC, ""),
                        },
                    )
                    for m in pending
                ),
                return_exceptions=True,
            )
            confirmed = 0
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, _NATS_ERRORS):
                        raise outcome
                    break
                confirmed += 1
            if confirmed:
                # AckPolicy.ALL: acknowledging the last confirmed one covers the prefix.
                await pending[confirmed - 1].ack()
                self.forwarded += confirmed
                pending = pending[confirmed:]
            if pending:
                self.link_up = False
                with contextlib.suppress(*_NATS_ERRORS):
                    await pending[-1].in_progress()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_backoff_max_s)
        self.link_up = True
