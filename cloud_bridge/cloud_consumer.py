"""The cloud side of the uplink: the hub stream and an exactly-once consumer of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, StorageType, StreamConfig
from nats.js.kv import KeyValue

from bus.lifecycle import raise_if_cancelled
from cloud_bridge import headers
from cloud_bridge.chunks import Reassembler, chunk_headers
from cloud_bridge.dead_letters import CloudDeadLetters
from cloud_bridge.dedupe import EdgeSequenceTracker
from cloud_bridge.errors import NATS_ERRORS, IntegrityError, MalformedChunk, log_nats_error
from cloud_bridge.settings import CLOUD_STREAM, CloudStreamSettings
from cloud_bridge.uplink_origin import UplinkRefused, kv_key, origin, position, tracker_key
from schemas import topics
from schemas.topics import TrafficClass

log = logging.getLogger(__name__)


async def ensure_cloud_stream(nc: NatsClient, settings: CloudStreamSettings) -> None:
    """Create (or update) the hub's uplink stream that every edge forwards into."""
    js = nc.jetstream()
    config = StreamConfig(
        name=CLOUD_STREAM,
        subjects=[topics.uplink_filter()],
        storage=StorageType.FILE,
        max_bytes=settings.max_bytes,
        duplicate_window=settings.duplicate_window_s,
        num_replicas=settings.replicas,
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


MAX_PENDING_PER_EDGE = 16
"""Chunked payloads one edge may have half-delivered at once (the bridge sends one per class at
a time); past it the edge's oldest is given up, so one edge cannot hold the consumer's memory."""


class CloudConsumer:
    """Reads the uplink stream through a durable consumer, each edge message exactly once.

    JetStream's duplicate window catches quick retries; the per-edge-class sequence tracker
    catches re-sends after any outage, and is kept in the KV bucket ``EF_SEEN_<durable>`` so a
    restarted consumer still knows. Messages of a fetched batch are acknowledged (and the
    tracker persisted) when the caller asks for the next message after the batch's last one,
    i.e. after all were handled; a consumer killed in the middle of a batch sees that batch's
    unacknowledged messages again (at least once across a consumer crash, never across edge
    or link failures). Use one consumer instance per durable name.

    Messages are refused, acknowledged and dead-lettered on ``ef.cloud.dead-letter.{service}``
    (`dead_letters`), never yielded and never left to block the consumer, when their subject is
    not ``ef.up.{edge}.{class}.{...}`` with a valid edge and a known class, their ``Ef-Edge``
    header names another edge than the subject, their ``Ef-Edge-Seq`` is not
    ``[epoch.]seq``, their chunk headers are malformed or the chunks do not match their
    sha256, or their edge has more than `MAX_PENDING_PER_EDGE` chunked payloads pending.
    Chunks are reassembled per edge: one edge cannot complete or spoil another's payload.

    Half-received chunked payloads are held (their messages unacknowledged) within
    `max_chunk_bytes` in all; past it the edge holding the most gives up its own oldest one
    (`cloud_bridge.chunks.Reassembler`), so one edge's flood never evicts another edge's
    payload while it holds more than that edge. A payload given up for any reason is
    dead-lettered once and its held messages acknowledged. Held messages are kept one per chunk
    index: a redelivery (same stream sequence) replaces its earlier delivery, and a copy sent
    again under a new stream sequence is acknowledged at once, so they stay within the same
    limits as the chunks themselves.

    Args:
        hub_url: the hub's client URL.
        durable: consumer name.
        filter_subject: which uplink subjects (see `schemas.topics.uplink_filter`).
        stream: the uplink stream's settings (it is created on entry).
        batch: messages fetched at once.
        service: the name its dead letters are published under (default: `durable`).
        max_chunk_bytes: the most bytes of half-received chunked payloads held, all edges.

    """

    def __init__(
        self,
        hub_url: str,
        *,
        durable: str,
        filter_subject: str | None = None,
        stream: CloudStreamSettings | None = None,
        batch: int = 256,
        user: str | None = None,
        password: str | None = None,
        service: str | None = None,
        max_chunk_bytes: int = 256 << 20,
    ) -> None:
        self._hub_url = hub_url
        self._durable = durable
        self._filter = filter_subject or topics.uplink_filter()
        self._stream_settings = stream or CloudStreamSettings()
        self._batch = batch
        self._user = user
        self._password = password
        self._nc: NatsClient | None = None
        self._kv: KeyValue | None = None
        self._chunks = Reassembler(
            max_bytes=max_chunk_bytes, on_abandon=lambda w, edge: self._abandoned.append((w, edge))
        )
        self._abandoned: list[tuple[str, str]] = []  # (whole id, edge) the budget gave up
        self._held: dict[str, dict[int, Msg]] = {}  # whole id -> chunk index -> its message
        self._pending: dict[str, list[str]] = {}  # edge -> its incomplete payloads, oldest first
        self.dead_letters = CloudDeadLetters(service or durable, lambda: self._nc)
        self.tracker = EdgeSequenceTracker()
        self.received = 0
        self.duplicates = 0

    async def __aenter__(self) -> Self:
        self._nc = await nats.connect(
            self._hub_url.split(","),  # a hub cluster: every node's URL, comma-separated
            user=self._user,
            password=self._password,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            connect_timeout=2,
            error_cb=log_nats_error,
        )
        try:
            await ensure_cloud_stream(self._nc, self._stream_settings)
            self._kv = await self._nc.jetstream().create_key_value(
                KeyValueConfig(
                    bucket="EF_SEEN_" + re.sub(r"[^A-Za-z0-9_-]", "_", self._durable),
                    history=1,
                    storage=StorageType.FILE,
                    replicas=self._stream_settings.replicas,
                )
            )
            with contextlib.suppress(nats.js.errors.NoKeysError):
                for key in await self._kv.keys():
                    entry = await self._kv.get(key)
                    if entry.value:
                        self.tracker.load(tracker_key(key), entry.value)
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
        nc, self._nc = self._nc, None
        if nc is not None:
            await nc.close()

    async def _subscribe(self) -> nats.js.JetStreamContext.PullSubscription:
        assert self._nc is not None, "enter the consumer first"
        return await self._nc.jetstream().pull_subscribe(
            self._filter,
            durable=self._durable,
            stream=CLOUD_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=120, max_ack_pending=-1),
        )

    async def _fetch(self, psub: nats.js.JetStreamContext.PullSubscription) -> list[Msg]:
        try:
            return await psub.fetch(self._batch, timeout=0.5)
        except (nats.errors.TimeoutError, *NATS_ERRORS) as exc:  # type: ignore[misc]
            # nats.py can turn our cancellation into its own error or (3.11 wait_for) into
            # a timeout; swallowing it hung the demo's and bench.bridge's teardown.
            raise_if_cancelled()
            if isinstance(exc, nats.errors.TimeoutError):
                return []
            log.debug("uplink fetch failed (hub restarting?): %s", exc)
            await asyncio.sleep(0.2)
            return []

    async def messages(self) -> AsyncIterator[UplinkMessage]:
        """Every new uplink message, in stream order, duplicates removed, chunks joined."""
        while True:
            try:
                psub = await self._subscribe()
                break
            except NATS_ERRORS as exc:
                raise_if_cancelled()
                log.debug("uplink consumer not bound yet: %s", exc)
                await asyncio.sleep(0.2)
        while True:
            raise_if_cancelled()  # a fetch may have returned messages and lost our cancel
            done: list[Msg] = []
            for msg in await self._fetch(psub):
                message = await self._accept(msg, done)
                if message is not None:
                    self.received += 1
                    yield message
            await self._commit(done)

    async def _accept(self, msg: Msg, done: list[Msg]) -> UplinkMessage | None:
        """Check, dedupe and reassemble one stream message; `done` collects what may be acked."""
        hdrs = dict(msg.headers or {})
        try:
            edge, traffic_class = origin(msg.subject, hdrs)
            epoch, seq = position(hdrs)
        except UplinkRefused as exc:
            await self.dead_letters(msg.subject, msg.data, str(exc))
            done.append(msg)
            return None
        key = f"{edge}.{traffic_class.value}"
        if seq and self.tracker.seen(key, seq, epoch):
            self.duplicates += 1
            done.append(msg)
            return None
        payload = msg.data
        message_id = hdrs.get(headers.MSG_ID, "")
        if Reassembler.is_chunk(hdrs):
            whole = await self._add_chunk(msg, hdrs, edge, done)
            if whole is None:
                return None
            message_id, payload = whole
        elif seq:
            self.tracker.record(key, seq, epoch)
            done.append(msg)
        else:
            done.append(msg)
        return UplinkMessage(
            edge=edge,
            traffic_class=traffic_class,
            subject=msg.subject,
            topic=hdrs.get(headers.TOPIC, ""),
            payload=payload,
            edge_sequence=seq,
            message_id=message_id,
        )

    async def _add_chunk(
        self, msg: Msg, hdrs: dict[str, str], edge: str, done: list[Msg]
    ) -> tuple[str, bytes] | None:
        """Add one chunk, reassembled in the edge's own namespace; the whole when complete."""
        sent_id = hdrs.get(headers.CHUNK_OF, "")
        whole_id = f"{edge}/{sent_id}"  # an edge can neither finish nor spoil another's payload
        if sent_id:
            hdrs[headers.CHUNK_OF] = whole_id
        try:
            index = chunk_headers(hdrs)[1]
        except MalformedChunk as exc:
            await self.dead_letters(msg.subject, msg.data, str(exc))
            done.append(msg)
            return None
        if not self._hold(whole_id, index, msg, edge, done):
            return None
        try:
            whole = self._chunks.add(hdrs, msg.data, owner=edge)
        except (IntegrityError, MalformedChunk) as exc:
            await self.dead_letters(msg.subject, msg.data, str(exc))
            self._give_up(whole_id, edge, done)
            whole = None
        budget = f"the {self._chunks.max_bytes}-byte chunk budget is full, {{}} holds the most"
        for given_up, owner in self._abandoned:
            await self._dead_letter_held(given_up, budget.format(owner))
            self._give_up(given_up, owner, done)
        self._abandoned.clear()
        if whole is not None:
            self._give_up(whole_id, edge, done)
            return sent_id, whole[1]
        pending = self._pending.get(edge, [])
        while len(pending) > MAX_PENDING_PER_EDGE:
            oldest = pending[0]
            reason = f"more than {MAX_PENDING_PER_EDGE} chunked payloads pending from {edge}"
            await self._dead_letter_held(oldest, reason)
            self._give_up(oldest, edge, done)
        return None

    def _hold(self, whole_id: str, index: int, msg: Msg, edge: str, done: list[Msg]) -> bool:
        """Keep a chunk's message until its payload is done; False when its index was held."""
        held = self._held.setdefault(whole_id, {})
        prior = held.get(index)
        if prior is None:
            pending = self._pending.setdefault(edge, [])
            if whole_id not in pending:
                pending.append(whole_id)
        elif prior.metadata.sequence.stream == msg.metadata.sequence.stream:
            held[index] = msg  # redelivered after ack_wait: the newer delivery replaces it
            return False
        else:
            done.append(msg)  # the same chunk sent again: acked now, the first copy is kept
            return False
        held[index] = msg
        return True

    async def _dead_letter_held(self, whole_id: str, why: str) -> None:
        """Report once that a half-received payload was given up, and why."""
        held = self._held.get(whole_id, {})
        subject = next(iter(held.values())).subject if held else ""
        await self.dead_letters(subject, b"", f"{whole_id} given up: {why}")

    def _give_up(self, whole_id: str, edge: str, done: list[Msg]) -> None:
        """Forget a payload (complete or refused) and let its chunks be acknowledged."""
        self._chunks.discard(whole_id)
        with contextlib.suppress(ValueError):
            self._pending.get(edge, []).remove(whole_id)
        for held in self._held.pop(whole_id, {}).values():
            hdrs = dict(held.headers or {})
            with contextlib.suppress(UplinkRefused):  # checked when it arrived
                sender, traffic_class = origin(held.subject, hdrs)  # its own class's tracker
                epoch, seq = position(hdrs)
                if seq:
                    self.tracker.record(f"{sender}.{traffic_class.value}", seq, epoch)
            done.append(held)

    async def _commit(self, done: list[Msg]) -> None:
        """Persist the tracker, then ack: a crash in between only re-delivers, never loses."""
        kv = self._kv
        assert kv is not None
        for key in sorted(self.tracker.dirty):
            try:
                await kv.put(kv_key(key), self.tracker.dump(key))
            except NATS_ERRORS as exc:
                # Not acked: redelivered later, and dropped then by the in-memory tracker.
                log.debug("dedupe state not persisted: %s", exc)
                return
            self.tracker.dirty.discard(key)
        for msg in done:
            with contextlib.suppress(*NATS_ERRORS):
                await msg.ack()
