"""The edge side of the cloud bridge: MQTT -> durable edge queues -> cloud JetStream.

Loops with one job each, in one task group:

* ingest (`cloud_bridge.ingest`): takes the topics that leave the site from local MQTT, writes
  each into its class's JetStream stream on the leaf (on disk, in the edge's own domain) and
  only then acknowledges it to the broker, so a bridge killed at any point loses nothing;
* forward (`cloud_bridge.forward`): drains the class queues, highest priority first, to the
  hub's stream through the leaf link, with one exact `Nats-Msg-Id` per queue entry on every
  retry. The bridge owns the retry timing instead of JetStream's stream sourcing, which waited
  ~35-40 s after a link came back;
* link (`cloud_bridge.link`): probes the hub every second, so a black-holed link is noticed
  in ~2 s and forwarding resumes as soon as the hub answers;
* downlink (`cloud_bridge.downlink`): delivers cloud messages for this edge onto local MQTT;
* status: publishes `BridgeStatus` retained on `topics.bridge_status()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from types import TracebackType
from typing import Self

import nats
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from bus.errors import NotConnected
from bus.lifecycle import ServiceTasks, raise_if_cancelled
from bus.mqtt import ConnectionState, MqttClient
from bus.nats_server import edge_inbox_prefix
from bus.subscription import InboundMessage, Subscription
from cloud_bridge.downlink import EdgeDownlink
from cloud_bridge.errors import NATS_ERRORS, log_nats_error
from cloud_bridge.forward import Forwarder
from cloud_bridge.ingest import Ingest
from cloud_bridge.link import LinkHealth
from cloud_bridge.routes import UPLINK_ROUTES
from cloud_bridge.settings import PRIORITY, BridgeSettings, edge_stream
from schemas import topics
from schemas.bridge import BridgeStatus, ClassStatus, LinkState
from schemas.codec import encode
from schemas.status import DeadLetter
from schemas.topics import TrafficClass

log = logging.getLogger(__name__)
SERVICE = "bridge"


class CloudBridge:
    """Store-and-forward between this edge's MQTT and the cloud hub, nothing lost or duplicated.

    Args:
        settings: queue budgets, batch size, timeouts.
        bus: an MQTT client with ``clean_session=False`` and ``manual_ack=True``, so the broker
            keeps what the bridge has not yet made durable. Pass it *not yet entered* and the
            bridge subscribes before connecting, so nothing the broker redelivers on connect
            can arrive before the subscriptions exist; an entered client also works.
        downlink: also deliver cloud -> edge messages onto local MQTT.

    """

    def __init__(self, settings: BridgeSettings, *, bus: MqttClient, downlink: bool = True) -> None:
        self.settings = settings
        self._bus = bus
        self._owns_bus = False
        self._nc: NatsClient | None = None
        self._tasks = ServiceTasks(SERVICE)
        self._stack = contextlib.AsyncExitStack()
        self._status_now = asyncio.Event()
        self.link = LinkHealth(
            self._client,
            interval_s=settings.probe_interval_s,
            timeout_s=settings.probe_timeout_s,
            on_change=lambda _: self._status_now.set(),
        )
        self._forwarder = Forwarder(
            settings, js_edge=self._js_edge, nc=self._client, link=self.link
        )
        self._ingest = Ingest(
            edge=settings.edge_id,
            js=self._js_edge,
            chunk_bytes=settings.chunk_bytes,
            max_payload_bytes=settings.max_payload_bytes,
            backoff_max_s=settings.retry_backoff_max_s,
            on_stored=self._forwarder.wake,
            on_invalid=self._dead_letter,
        )
        self._downlink = EdgeDownlink(settings, bus=bus, nc=self._client) if downlink else None
        self.rejected = 0

    @property
    def forwarded(self) -> int:
        """Messages confirmed stored in the cloud."""
        return self._forwarder.forwarded

    @property
    def ingested(self) -> int:
        """Messages taken from MQTT and stored on the edge."""
        return self._ingest.ingested

    @property
    def link_up(self) -> bool:
        """The last probe (or forward) reached the hub."""
        return self.link.state is LinkState.UP

    @property
    def downlink(self) -> EdgeDownlink | None:
        """The cloud -> edge side, when enabled."""
        return self._downlink

    def _client(self) -> NatsClient:
        assert self._nc is not None, "enter the bridge first"
        return self._nc

    def _js_edge(self) -> JetStreamContext:
        return self._client().jetstream(domain=self.settings.edge_id, timeout=5)

    async def __aenter__(self) -> Self:
        s = self.settings
        self._nc = await nats.connect(
            s.leaf_url,
            name=f"edgefabric-bridge-{s.edge_id}",
            user=s.leaf_user,
            password=s.leaf_password,
            # Replies from the hub reach this edge only on its own inbox prefix (the hub's
            # per-edge leaf permissions forward nothing else).
            inbox_prefix=edge_inbox_prefix(s.edge_id),
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            connect_timeout=2,
            error_cb=log_nats_error,
        )
        try:
            await self._ensure_edge_streams()
            await self._forwarder.open()
            subs: list[Subscription] = [
                await self._stack.enter_async_context(self._bus.subscribe(f, maxsize=s.batch * 2))
                for f, _ in UPLINK_ROUTES
            ]
            if self._downlink is not None:
                await self._downlink.open()
            if self._bus.state is ConnectionState.NEW:
                await self._stack.enter_async_context(self._bus)
                self._owns_bus = True
            await self._tasks.__aenter__()
            self._tasks.spawn(self.link.run(), "link")
            self._tasks.spawn(self._forwarder.run(), "forward")
            self._tasks.spawn(self._status_loop(), "status")
            for sub in subs:
                self._tasks.spawn(self._ingest.run(sub, s.batch), f"ingest[{sub.topic_filter}]")
            if self._downlink is not None:
                self._tasks.spawn(self._downlink.run(), "downlink")
        except BaseException:
            await self._stack.aclose()
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

    async def _ensure_edge_streams(self) -> None:
        js = self._js_edge()
        for traffic_class in PRIORITY:
            name = edge_stream(traffic_class)
            limits = self.settings.limits_of(traffic_class)
            epoch = str(time.time_ns())
            with contextlib.suppress(nats.js.errors.NotFoundError):
                epoch = (await js.stream_info(name)).config.metadata.get("ef_epoch", epoch)  # type: ignore[union-attr]
            config = StreamConfig(
                name=name,
                subjects=[topics.edge_queue(self.settings.edge_id, traffic_class) + ".>"],
                storage=StorageType.FILE,
                # Interest: a message leaves the disk once the forwarder acked it (hub stored).
                retention=RetentionPolicy.INTEREST,
                max_bytes=limits.max_bytes,
                max_age=limits.max_age_s,
                discard=DiscardPolicy.OLD if limits.drop_oldest else DiscardPolicy.NEW,
                duplicate_window=self.settings.duplicate_window_s,
                metadata={"ef_epoch": epoch},
            )
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await js.update_stream(config)
            self._forwarder.set_epoch(traffic_class, epoch)

    async def _dead_letter(self, message: InboundMessage, reason: str) -> None:
        self.rejected += 1
        letter = DeadLetter.of(
            service=SERVICE, topic=message.topic, reason=reason, payload=message.payload
        )
        with contextlib.suppress(NotConnected):
            await self._bus.publish(topics.dead_letter(SERVICE), encode(letter))

    async def _class_status(self, traffic_class: TrafficClass) -> ClassStatus:
        counters = self._forwarder.counters[traffic_class]
        js = self._js_edge()
        name = edge_stream(traffic_class)
        info = await js.stream_info(name)
        lag = 0.0
        if info.state.messages:
            with contextlib.suppress(*NATS_ERRORS):
                oldest = await js.get_msg(name, seq=info.state.first_seq, next=True)
                lag = max(0.0, time.time() - _timestamp(oldest.time))
        return ClassStatus(
            queued=info.state.messages,
            queued_bytes=info.state.bytes,
            forwarded=counters.forwarded,
            dropped=counters.dropped,
            lag_s=lag,
        )

    async def status(self) -> BridgeStatus:
        """The bridge's current link state, queues and counters (asks the leaf).

        Raises:
            nats.errors.Error: the leaf did not answer.

        """
        classes = {c.value: await self._class_status(c) for c in PRIORITY}
        return BridgeStatus(
            edge=self.settings.edge_id,
            link=self.link.state,
            link_changed_at=self.link.changed_at,
            classes=classes,
            ingested=self.ingested,
            forwarded=self.forwarded,
            rejected=self.rejected,
        )

    async def _status_loop(self) -> None:
        while True:
            raise_if_cancelled()  # nats.py's wait_for may have dropped a cancel
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.status_interval_s):
                    await self._status_now.wait()
            self._status_now.clear()
            try:
                status = await self.status()
                await self._bus.publish(
                    topics.bridge_status(), encode(status), retain=True, timeout=2
                )
            except (*NATS_ERRORS, NotConnected) as exc:  # type: ignore[misc]
                log.debug("bridge status not published: %s", exc)


def _timestamp(value: object) -> float:
    """Seconds since the epoch of a JetStream message time (RFC 3339 text or a datetime)."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        text = value.rstrip("Z")
        head, _, frac = text.partition(".")
        return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")
    return time.time()
