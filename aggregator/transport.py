"""How round frames move: an interface, the real NATS implementation, and the edge links.

Cloud side (`CloudTransport`): the global model goes down with `CloudPublisher` (stream
``EF_DOWN``, kind ``fl-global``, retained on the edge's ``ef/fl/{job}/global``), updates come
up through a durable `CloudConsumer` on ``ef.up.*.control.fl.{job}.update`` (exactly once,
chunks joined). Edge side (`EdgeLink`): `MqttEdgeLink` for a real edge behind its bridge;
`NatsEdgeLink` for edges simulated in-process in tests and the bench, talking to the hub as
the bridge would (same subjects, headers and chunking).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Protocol, Self

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.mqtt import MqttClient
from bus.mqtt_connection import PublishRefused
from bus.subscription import Overflow
from cloud_bridge import headers
from cloud_bridge.chunks import Reassembler
from cloud_bridge.cloud_consumer import CloudConsumer
from cloud_bridge.dead_letters import CloudDeadLetters
from cloud_bridge.downlink import FL_GLOBAL, CloudPublisher
from cloud_bridge.errors import IntegrityError
from cloud_bridge.ingest import split
from schemas import topics
from schemas.base import new_message_id
from schemas.codec import encode
from schemas.status import DeadLetter
from schemas.topics import TrafficClass

CHUNK_BYTES = 512 << 10
TRAINER_SERVICE = "fl-trainer"
"""The edge trainer's service name: its refused globals go to ``ef/dead-letter/fl-trainer``."""
log = logging.getLogger(__name__)


class CloudTransport(Protocol):
    """What the coordinator needs: send a global frame, read update frames."""

    async def send_global(self, frame: bytes) -> None:
        """Deliver a global-model frame to every edge of the job."""
        ...

    def updates(self) -> AsyncIterator[tuple[str, bytes]]:
        """Every (edge, update frame) that arrives, exactly once."""
        ...


class EdgeLink(Protocol):
    """What an edge trainer needs: global frames in, update frames out, refusals reported."""

    @property
    def job(self) -> str:
        """The federated job whose globals this link delivers."""
        ...

    def globals(self) -> AsyncIterator[bytes]:
        """Every global-model frame for this edge's job."""
        ...

    async def send_update(self, frame: bytes) -> None:
        """Send one update frame towards the cloud."""
        ...

    async def refuse(self, frame: bytes, reason: str) -> None:
        """Report a global frame the trainer refused, with the reason."""
        ...


class NatsCloudTransport:
    """The cloud end over the hub: `CloudPublisher` down, `CloudConsumer` up."""

    def __init__(self, hub_url: str, job: str) -> None:
        self._job = job
        self._publisher = CloudPublisher(hub_url)
        self._consumer = CloudConsumer(
            hub_url, durable=f"fl-{job}", filter_subject=topics.fl_update_uplink_filter(job)
        )

    async def __aenter__(self) -> Self:
        await self._publisher.__aenter__()
        try:
            await self._consumer.__aenter__()
        except BaseException:
            await self._publisher.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._consumer.__aexit__(et, e, tb)
        finally:
            await self._publisher.__aexit__(et, e, tb)

    @property
    def dead_letters(self) -> CloudDeadLetters:
        """Where this job's refused updates are reported (``ef.cloud.dead-letter.fl-{job}``)."""
        return self._consumer.dead_letters

    async def send_global(self, frame: bytes) -> None:
        """Store the frame in the downlink stream for every edge (chunked past 512 KiB)."""
        await self._publisher.publish(None, FL_GLOBAL, self._job, payload=frame)

    async def updates(self) -> AsyncIterator[tuple[str, bytes]]:
        """Update frames from the uplink stream."""
        async for message in self._consumer.messages():
            yield message.edge, message.payload


class NatsEdgeLink:
    """A simulated edge's link to the hub: what its bridge would do, in-process.

    Globals arrive on core subscriptions to the downlink subjects (the stream publish is seen
    by core subscribers too) and are reassembled; updates go into the uplink stream with the
    bridge's headers and chunking. Only the newest global matters, so the inbox keeps 2 and
    drops the oldest.
    """

    def __init__(self, hub_url: str, *, edge: str, job: str) -> None:
        self._hub_url = hub_url
        self._edge = edge
        self._job = job
        self._nc: NatsClient | None = None
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=2)
        self._chunks = Reassembler(max_bytes=64 << 20)
        self.refusals: deque[str] = deque(maxlen=64)
        """The reasons of the latest refused globals (a simulated edge's dead letters)."""

    @property
    def job(self) -> str:
        """The job whose globals this link delivers."""
        return self._job

    async def __aenter__(self) -> Self:
        self._nc = await nats.connect(self._hub_url, connect_timeout=2)
        for subject in (
            topics.downlink(self._edge, FL_GLOBAL, self._job),
            topics.downlink(None, FL_GLOBAL, self._job),
        ):
            await self._nc.subscribe(subject, cb=self._on_global)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await nc.close()

    async def _on_global(self, msg: Msg) -> None:
        data: bytes | None = msg.data
        if Reassembler.is_chunk(msg.headers):
            try:
                whole = self._chunks.add(msg.headers or {}, msg.data)
            except IntegrityError:
                return
            data = None if whole is None else whole[1]
        if data is None:
            return
        if self._inbox.full():
            self._inbox.get_nowait()
        self._inbox.put_nowait(data)

    async def globals(self) -> AsyncIterator[bytes]:
        """Global frames, newest kept when the trainer falls behind."""
        while True:
            yield await self._inbox.get()

    async def send_update(self, frame: bytes) -> None:
        """Publish into the uplink stream as the bridge does (ids, edge header, chunks)."""
        assert self._nc is not None, "enter the link first"
        js = self._nc.jetstream(domain="cloud", timeout=10)
        subject = topics.uplink(self._edge, TrafficClass.CONTROL, "fl", self._job, "update")
        base = {headers.MSG_ID: new_message_id(), headers.EDGE: self._edge}
        for part_subject, data, hdrs in split(subject, frame, base, CHUNK_BYTES):
            await js.publish(part_subject, data, headers=hdrs)

    async def refuse(self, frame: bytes, reason: str) -> None:
        """A simulated edge has no MQTT dead-letter topic: the refusal is logged and kept."""
        self.refusals.append(reason)
        log.warning("edge %s: refused a %d-byte global: %s", self._edge, len(frame), reason)


class MqttEdgeLink:
    """A real edge: globals from the retained ``ef/fl/{job}/global``, updates to the bridge."""

    def __init__(self, bus: MqttClient, *, job: str) -> None:
        self._bus = bus
        self._job = job

    @property
    def job(self) -> str:
        """The job whose globals this link delivers."""
        return self._job

    async def globals(self) -> AsyncIterator[bytes]:
        """Global frames delivered by the bridge's downlink (retained: the latest on start)."""
        async with self._bus.subscribe(
            topics.fl_global(self._job), maxsize=2, overflow=Overflow.DROP_OLDEST
        ) as sub:
            async for message in sub:
                message.ack()
                yield message.payload

    async def send_update(self, frame: bytes) -> None:
        """Publish the update locally; the bridge queues it and carries it up (chunked)."""
        await self._bus.publish(topics.fl_update(self._job), frame, qos=1, timeout=10)

    async def refuse(self, frame: bytes, reason: str) -> None:
        """Dead-letter a refused global on ``ef/dead-letter/fl-trainer``, with the reason."""
        letter = DeadLetter.of(
            service=TRAINER_SERVICE, topic=topics.fl_global(self._job), reason=reason, payload=frame
        )
        try:
            await self._bus.publish(topics.dead_letter(TRAINER_SERVICE), encode(letter), timeout=10)
        except PublishRefused:  # the ACL lacks the dead-letter topic: the log must do
            log.warning("edge trainer refused a global of job %s: %s", self._job, reason)
