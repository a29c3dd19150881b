"""Forward: the edge class queues -> the hub's uplink stream, highest class first.

One durable pull consumer per class queue (AckPolicy.ALL on an interest stream, so a message
leaves the edge disk once the hub has stored it). Each batch is published pipelined to the hub
stream in domain ``cloud``; the confirmed prefix is acknowledged and the unconfirmed tail is
retried with the same `Nats-Msg-Id`, after the link probe says the hub answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus.lifecycle import raise_if_cancelled
from cloud_bridge import headers
from cloud_bridge.errors import NATS_ERRORS
from cloud_bridge.link import LinkHealth
from cloud_bridge.publisher import BatchPublisher
from cloud_bridge.pull import fetch_batch
from cloud_bridge.settings import PRIORITY, BridgeSettings, edge_stream
from schemas import topics
from schemas.bridge import LinkState
from schemas.topics import TrafficClass

log = logging.getLogger(__name__)
FORWARDER = "ef-forwarder"
_IDLE_RECHECK_S = 2.0


@dataclass
class ClassCounters:
    """What the forwarder did for one class."""

    forwarded: int = 0
    dropped: int = 0
    last_seq: int = 0
    epoch: str = "0"
    maybe_pending: bool = True
    delivery: int = 0
    generation: int = 0


@dataclass
class TokenBucket:
    """Bytes per second for the bulk classes; `rate` 0 means no cap."""

    rate: int
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    async def take(self, amount: int) -> None:
        """Wait until `amount` bytes may be sent (a burst of up to one second is allowed)."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        self.tokens = min(float(self.rate), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= amount
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


class Forwarder:
    """Drains the class queues to the cloud in priority order, each message exactly once."""

    def __init__(
        self,
        settings: BridgeSettings,
        *,
        js_edge: Callable[[], JetStreamContext],
        nc: Callable[[], NatsClient],
        link: LinkHealth,
    ) -> None:
        self._settings = settings
        self._js_edge = js_edge
        self._publisher = BatchPublisher(nc, timeout_s=settings.publish_timeout_s)
        self._link = link
        self.counters = {c: ClassCounters() for c in PRIORITY}
        self._wake = asyncio.Event()
        self._bucket = TokenBucket(settings.bulk_bytes_per_s)
        self._subs: dict[TrafficClass, JetStreamContext.PullSubscription] = {}

    @property
    def forwarded(self) -> int:
        """Messages confirmed stored by the hub, over all classes."""
        return sum(c.forwarded for c in self.counters.values())

    def wake(self, traffic_class: TrafficClass) -> None:
        """Ingest stored something in `traffic_class`."""
        counters = self.counters[traffic_class]
        counters.generation += 1
        counters.maybe_pending = True
        self._wake.set()

    def set_epoch(self, traffic_class: TrafficClass, epoch: str) -> None:
        """The class queue's epoch (changes only if its stream is re-created)."""
        self.counters[traffic_class].epoch = epoch

    async def open(self) -> None:
        """Bind a fresh durable consumer per class at the last forwarded position.

        Done before ingest starts, so interest exists for every stored message.
        """
        for traffic_class in PRIORITY:
            floor = 0
            with contextlib.suppress(*NATS_ERRORS):
                for info in await self._js_edge().consumers_info(edge_stream(traffic_class)):
                    if info.name.startswith(FORWARDER) and info.ack_floor is not None:
                        floor = max(floor, info.ack_floor.stream_seq or 0)
            self.counters[traffic_class].last_seq = floor
            await self._rebind(traffic_class)

    async def _rebind(self, traffic_class: TrafficClass) -> None:
        """A new consumer from the first message not yet forwarded; the old ones go.

        Why: with AckPolicy.ALL, acking a later message also acks earlier ones that were
        delivered but never reached us (a killed bridge's last fetch, a fetch reply lost when
        the leaf died); JetStream would redeliver them only after ack_wait, and the ALL ack
        would have covered them by then. Starting over at our own floor loses nothing.
        """
        js = self._js_edge()
        stream = edge_stream(traffic_class)
        name = f"{FORWARDER}-{time.time_ns()}"
        sub = await js.pull_subscribe(
            topics.edge_queue_filter(self._settings.edge_id),
            durable=name,
            stream=stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.ALL,
                ack_wait=60,
                max_ack_pending=-1,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.counters[traffic_class].last_seq + 1,
            ),
        )
        with contextlib.suppress(*NATS_ERRORS):
            for info in await js.consumers_info(stream):
                if info.name.startswith(FORWARDER) and info.name != name:
                    await js.delete_consumer(stream, info.name)
        self._subs[traffic_class] = sub
        self.counters[traffic_class].delivery = 0

    async def run(self) -> None:
        """Forward forever in rounds over the classes, highest first.

        A full batch means a backlog: the round starts again from the top, so a higher class is
        emptied before a lower one is read. A partial batch means the class is drained and the
        next class gets its turn, so a steady trickle of twin updates cannot starve results.
        """
        while True:
            raise_if_cancelled()  # nats.py's wait_for may have dropped a cancel
            if self._link.state is LinkState.DOWN:
                # Publishing into a dead (or black-holed) link only costs a publish timeout
                # when it returns; the probe says within ~0.25 s that the hub answers again.
                await self._link.wait_up(timeout=_IDLE_RECHECK_S)
                continue
            self._wake.clear()
            moved = False
            for traffic_class in PRIORITY:
                sent = await self._drain_once(traffic_class)
                moved = moved or sent > 0
                if sent >= self._settings.batch:
                    break
            if moved:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_IDLE_RECHECK_S):
                    await self._wake.wait()
            if not self._wake.is_set():  # periodic re-check (redeliveries, restarts)
                for counters in self.counters.values():
                    counters.maybe_pending = True

    async def _drain_once(self, traffic_class: TrafficClass) -> int:
        """Forward one batch of a class; how many messages it had (0 = nothing waiting)."""
        counters = self.counters[traffic_class]
        if not counters.maybe_pending:
            return 0
        generation = counters.generation
        try:
            # No-wait pull: the leaf answers at once, with messages or "none".
            msgs = await fetch_batch(self._subs[traffic_class], self._settings.batch, timeout=1.0)
        except NATS_ERRORS:
            return 0  # the leaf did not answer: still maybe pending
        if not msgs:
            if generation == counters.generation:
                counters.maybe_pending = False
            return 0
        if msgs[0].metadata.sequence.consumer != counters.delivery + 1:
            log.warning("%s: deliveries lost in transit; rebinding", traffic_class)
            await self._try_rebind(traffic_class)
            return 0
        counters.delivery = msgs[-1].metadata.sequence.consumer
        if traffic_class in self._settings.bulk:
            await self._bucket.take(sum(len(m.data) for m in msgs))
        await self._send(traffic_class, msgs)
        return len(msgs)

    async def _try_rebind(self, traffic_class: TrafficClass) -> None:
        try:
            await self._rebind(traffic_class)
        except NATS_ERRORS as exc:
            log.warning("rebind of %s failed: %s", traffic_class, exc)
            await asyncio.sleep(0.2)

    def _headers(self, traffic_class: TrafficClass, msg: Msg) -> dict[str, str]:
        counters = self.counters[traffic_class]
        seq = msg.metadata.sequence.stream
        edge = self._settings.edge_id
        carried = dict(msg.headers or {})
        carried.pop(headers.MSG_ID, None)
        return carried | {
            # Exact and unique per queue entry: the edge, the class queue's life, the position.
            headers.MSG_ID: f"{edge}.{traffic_class.value}.{counters.epoch}.{seq}",
            headers.EDGE: edge,
            headers.EDGE_SEQ: f"{counters.epoch}.{seq}",
        }

    def _count_gaps(self, traffic_class: TrafficClass, msgs: list[Msg]) -> list[Msg]:
        """Count sequences evicted by the class limits; skip redelivered copies already sent."""
        counters = self.counters[traffic_class]
        fresh = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            if seq <= counters.last_seq:
                continue
            counters.dropped += seq - counters.last_seq - 1
            counters.last_seq = seq
            fresh.append(msg)
        return fresh

    async def _send(self, traffic_class: TrafficClass, msgs: list[Msg]) -> None:
        """Publish a batch in order; retry the unconfirmed tail until it lands."""
        edge = self._settings.edge_id
        last = msgs[-1]
        pending = [
            (topics.uplink_from_queue(edge, m.subject), m.data, self._headers(traffic_class, m))
            for m in self._count_gaps(traffic_class, msgs)
        ]
        backoff = 0.05
        while pending:
            confirmed = await self._publisher.publish(pending)
            self.counters[traffic_class].forwarded += confirmed
            pending = pending[confirmed:]
            if confirmed:
                self._link.report_success()
            if pending:
                self._link.report_failure()
                with contextlib.suppress(*NATS_ERRORS):
                    await last.in_progress()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._settings.retry_backoff_max_s)
                # Do not hammer a dead link; the probe says when the hub answers again.
                await self._link.wait_up(timeout=5.0)
        # AckPolicy.ALL: acknowledging the last one covers the batch (and any skipped copies).
        await self._ack(last)

    async def _ack(self, msg: Msg) -> None:
        for attempt in range(3):
            try:
                await msg.ack_sync(timeout=1)
            except NATS_ERRORS as exc:
                log.warning("ack to the edge queue failed (%s), attempt %d", exc, attempt + 1)
            else:
                return
        # The leaf restarted and forgot this delivery: it redelivers the batch, `_count_gaps`
        # skips the copies (already in the cloud) and the next ack covers them.
