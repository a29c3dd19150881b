"""Downlink: cloud -> one edge or every edge, durable, delivered onto the edge's local MQTT.

The cloud publishes into the hub stream ``EF_DOWN`` (`CloudPublisher`); each edge reads it with
its own durable consumer in domain ``cloud`` through the leaf (`EdgeDownlink`), filtered to its
own subjects and the broadcast ones, so what was sent while the edge was offline arrives when
it is back. Model updates and federated global models are published retained (a pipeline that
starts later still gets the latest); desired twin state is not (the twin persists it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

import nats
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from bus.errors import NotConnected
from bus.lifecycle import raise_if_cancelled
from bus.mqtt import MqttClient
from cloud_bridge import headers
from cloud_bridge.chunks import Reassembler, chunk_headers
from cloud_bridge.errors import NATS_ERRORS, BridgeError, IntegrityError, MalformedChunk
from cloud_bridge.ingest import split
from cloud_bridge.settings import DOWNLINK_STREAM, BridgeSettings
from schemas import topics
from schemas.base import check_name
from schemas.codec import encode
from schemas.errors import InvalidName
from schemas.status import DeadLetter

log = logging.getLogger(__name__)

MODEL = "model"
TWIN_DESIRED = "twin-desired"
FL_GLOBAL = "fl-global"
_KINDS: dict[str, tuple[Callable[[str], str], bool]] = {
    MODEL: (topics.model_update, True),
    TWIN_DESIRED: (topics.twin_desired_set, False),
    FL_GLOBAL: (topics.fl_global, True),
}
"""Downlink kind -> (local topic builder of its one token, retained)."""
_CHUNK_BYTES = 512 << 10
SERVICE = "bridge"
"""Dead letters of the downlink go where the uplink's do (`cloud_bridge.bridge.SERVICE`)."""


def local_topic(subject: str) -> tuple[str, bool]:
    """Local MQTT topic and retain flag of a downlink subject (``ef.down.E.model.m1``).

    Raises:
        InvalidName: the kind is unknown or the tokens do not fit it.

    """
    parts = subject.split(".")
    if len(parts) != 5 or parts[:2] != [topics.ROOT, "down"] or parts[3] not in _KINDS:
        raise InvalidName(subject, "is not a known downlink subject")
    builder, retain = _KINDS[parts[3]]
    return builder(parts[4]), retain


async def ensure_downlink_stream(nc: NatsClient, *, replicas: int = 1) -> None:
    """Create (or update) the hub's downlink stream."""
    js = nc.jetstream()
    config = StreamConfig(
        name=DOWNLINK_STREAM,
        subjects=[f"{topics.ROOT}.down.>"],
        storage=StorageType.FILE,
        max_age=30 * 24 * 3600,
        max_bytes=4 << 30,
        duplicate_window=600,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)


def downlink_consumer(edge: str) -> ConsumerConfig:
    """The one durable consumer through which `edge` reads its downlink and the broadcasts.

    One consumer for both filters keeps the stream's order between a broadcast and a message
    to this edge (a broadcast model update, then this edge's rollback, must arrive in that
    order).
    """
    name = f"ef-down-{check_name(edge)}"
    return ConsumerConfig(
        name=name,
        durable_name=name,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=120,
        max_ack_pending=10_000,
        filter_subjects=list(topics.downlink_filters(edge)),
    )


async def provision_downlink(nc: NatsClient, edge: str, *, replicas: int = 1) -> None:
    """Create (or update) `edge`'s downlink consumer from the cloud side.

    Subject permissions never inspect request bodies, and a consumer's filter is in the body:
    an edge allowed to create its consumer could give it another edge's filter. So a confined
    edge is not allowed to (`bus.nats_server.edge_leaf_permissions`), and the cloud, which
    knows the edge's name from its login, creates it here.
    """
    await ensure_downlink_stream(nc, replicas=replicas)
    await nc.jetstream(timeout=5).add_consumer(DOWNLINK_STREAM, downlink_consumer(edge))


class CloudPublisher:
    """What cloud services use to send to edges: durable, chunked above the max payload.

    Args:
        hub_url: the hub's client URL.
        user: hub login (None = anonymous or in the URL).
        password: hub password.
        replicas: copies of `EF_DOWN` in a hub cluster (as `CloudStreamSettings.replicas`
            for `EF_UP`).

    """

    def __init__(
        self,
        hub_url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        replicas: int = 1,
    ) -> None:
        self._hub_url = hub_url
        self._user = user
        self._password = password
        self._replicas = replicas
        self._nc: NatsClient | None = None

    async def __aenter__(self) -> Self:
        self._nc = await nats.connect(
            self._hub_url,
            user=self._user,
            password=self._password,
            connect_timeout=2,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
        )
        await ensure_downlink_stream(self._nc, replicas=self._replicas)
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

    async def provision(self, edge: str) -> None:
        """Create `edge`'s downlink consumer (see `provision_downlink`)."""
        assert self._nc is not None, "enter the publisher first"
        await provision_downlink(self._nc, edge, replicas=self._replicas)

    async def publish(
        self, edge: str | None, kind: str, *tokens: str, payload: bytes, message_id: str = ""
    ) -> None:
        """Store one message for `edge` (every edge when None) in the downlink stream.

        Raises:
            InvalidName: a name is not a valid token.
            BridgeError: the hub did not confirm within the timeout.

        """
        assert self._nc is not None, "enter the publisher first"
        subject = topics.downlink(edge, kind, *tokens)
        msg_id = message_id or hashlib.sha256(subject.encode() + b"\0" + payload).hexdigest()
        js = self._nc.jetstream(timeout=5)
        for part_subject, data, hdrs in split(
            subject, payload, {headers.MSG_ID: msg_id}, _CHUNK_BYTES
        ):
            try:
                await js.publish(part_subject, data, headers=hdrs)
            except NATS_ERRORS as exc:
                raise BridgeError(f"downlink {subject} not stored: {exc}") from exc


class EdgeDownlink:
    """Delivers this edge's downlink onto local MQTT; acks only after the broker has it."""

    def __init__(
        self, settings: BridgeSettings, *, bus: MqttClient, nc: Callable[[], NatsClient]
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._nc = nc
        self._chunks = Reassembler(on_abandon=self._abandoned)
        # Held chunk messages, one per chunk index: a redelivery replaces, never appends.
        self._held: dict[str, dict[int, Msg]] = {}
        self._psub: object | None = None
        self.delivered = 0
        self.rejected = 0

    async def open(self) -> None:
        """Nothing to do up front: the consumer is bound lazily, since the hub may be away."""

    async def _bind(self) -> nats.js.JetStreamContext.PullSubscription:
        """Bind this edge's downlink consumer; create it only if the hub lets this edge.

        A confined edge (per-edge leaf user) may not create consumers at all: its consumer
        is provisioned by the cloud (`provision_downlink`), so the edge can never choose the
        filter. An unconfined edge (development, the demo) creates its own on first use.
        """
        js = self._nc().jetstream(domain="cloud", timeout=5)
        config = downlink_consumer(self._settings.edge_id)
        assert config.durable_name is not None
        try:
            await js.consumer_info(DOWNLINK_STREAM, config.durable_name)
        except nats.js.errors.NotFoundError:
            await js.add_consumer(DOWNLINK_STREAM, config)
        return await js.pull_subscribe_bind(config.durable_name, stream=DOWNLINK_STREAM)

    async def run(self) -> None:
        """Fetch and deliver forever; rebind after the hub or the link was away."""
        psub = None
        while True:
            raise_if_cancelled()  # nats.py's wait_for may have dropped a cancel
            if psub is None:
                try:
                    psub = await self._bind()
                except NATS_ERRORS as exc:
                    log.debug("downlink consumer not bound yet: %s", exc)
                    await _pause(1.0)
                    continue
            try:
                msgs = await psub.fetch(64, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            except NATS_ERRORS as exc:
                log.debug("downlink fetch failed: %s", exc)
                await _pause(0.5)
                continue
            for msg in msgs:
                await self._deliver(msg)

    async def _deliver(self, msg: Msg) -> None:
        hdrs = dict(msg.headers or {})
        payload: bytes | None = msg.data
        held = [msg]
        if Reassembler.is_chunk(hdrs):
            whole_id = hdrs.get(headers.CHUNK_OF, "")
            try:
                _, index, _, _ = chunk_headers(hdrs)
                self._held.setdefault(whole_id, {})[index] = msg
                done = self._chunks.add(hdrs, msg.data)
            except (IntegrityError, MalformedChunk) as exc:
                # Acked and dead-lettered: a poison message must not come back forever.
                await self._dead_letter(msg.subject, msg.data, str(exc))
                for m in [msg, *self._held.pop(whole_id, {}).values()]:
                    await _ack(m)
                return
            if done is None:
                return
            payload = done[1]
            held = list(self._held.pop(whole_id, {}).values())
        try:
            topic, retain = local_topic(msg.subject)
        except InvalidName as exc:
            await self._dead_letter(msg.subject, payload or b"", str(exc))
        else:
            try:
                await self._bus.publish(topic, payload or b"", retain=retain, timeout=5)
            except NotConnected:
                return  # not acked: redelivered after ack_wait
            self.delivered += 1
        for m in held:
            await _ack(m)

    def _abandoned(self, whole_id: str, owner: str) -> None:
        """Forget the messages of a partial payload the budget gave up.

        They stay unacked, so JetStream redelivers them after `ack_wait` and the payload is
        assembled again: the downlink comes from the cloud, which is trusted to send it whole.
        """
        self._held.pop(whole_id, None)

    async def _dead_letter(self, subject: str, payload: bytes, reason: str) -> None:
        """Report a downlink message that cannot be delivered on ``ef/dead-letter/bridge``."""
        log.warning("downlink %s refused: %s", subject, reason)
        self.rejected += 1
        letter = DeadLetter.of(service=SERVICE, topic=subject, reason=reason, payload=payload)
        with contextlib.suppress(NotConnected):
            await self._bus.publish(topics.dead_letter(SERVICE), encode(letter), timeout=5)


async def _ack(msg: Msg) -> None:
    with contextlib.suppress(*NATS_ERRORS):
        await msg.ack()


async def _pause(seconds: float) -> None:
    await asyncio.sleep(seconds)
