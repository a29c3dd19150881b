"""The cloud consumer's limits on half-received chunked payloads, per edge and in all.

Promise (docs/security.md, docs/bridge.md): the chunk budget is shared fairly, so one edge that
floods half-sent chunked payloads gives up its own, never another edge's while it holds more;
every payload given up is dead-lettered once and its held messages acknowledged; a redelivered
chunk never makes the consumer hold more. The end-to-end promise runs on a real hub.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.lifecycle import ServiceTasks
from bus.nats_server import HubSpec, NatsServer
from bus.ports import free_port
from cloud_bridge import headers
from cloud_bridge.chunks import Reassembler
from cloud_bridge.cloud_consumer import CloudConsumer, UplinkMessage
from cloud_bridge.ingest import split
from cloud_bridge.settings import CLOUD_STREAM
from schemas import topics
from schemas.codec import decode
from schemas.status import DeadLetter
from tests.support import wait_for

SERVICE = "chunk-limits"
PART = 100
"""Bytes of every chunk here."""


def _partial(edge: str, name: str, seq: int) -> tuple[str, dict[str, str], bytes]:
    """Chunk 0 of a two-chunk payload whose second chunk never comes."""
    hdrs = {
        headers.CHUNK: "0/2",
        headers.CHUNK_OF: name,
        headers.SHA256: "0" * 64,
        headers.MSG_ID: f"{edge}-{name}",
        headers.EDGE_SEQ: f"1.{seq}",
    }
    return topics.uplink(edge, topics.TrafficClass.HARD_EXAMPLES, "h", "v"), hdrs, b"p" * PART


def _whole(edge: str) -> list[tuple[str, dict[str, str], bytes]]:
    """The two chunks of a real payload of `edge`."""
    subject = topics.uplink(edge, topics.TrafficClass.HARD_EXAMPLES, "h", "v")
    base = {headers.MSG_ID: "keep", headers.EDGE: edge}
    chunks = split(subject, bytes(range(200)), base, PART)
    return [(s, h | {headers.EDGE_SEQ: f"1.{i + 1}"}, d) for i, (s, d, h) in enumerate(chunks)]


def test_reassembler_gives_up_the_largest_owners_oldest_payload_never_a_smaller_owners() -> None:
    given_up: list[tuple[str, str]] = []
    chunks = Reassembler(max_bytes=6 * PART, on_abandon=lambda w, o: given_up.append((w, o)))
    (_, first, data0), (_, second, data1) = _whole("b")
    assert chunks.add(first, data0, owner="b") is None
    for i in range(12):
        _, hdrs, data = _partial("a", f"flood-{i}", i)
        assert chunks.add(hdrs, data, owner="a") is None
        assert chunks.holding("b") == PART  # a holds more than b: only a's own are given up
    assert given_up == [(f"flood-{i}", "a") for i in range(7)]
    assert chunks.holding("a") == 5 * PART
    assert chunks.add(second, data1, owner="b") == ("keep", bytes(range(200)))
    assert chunks.abandoned == 7


def test_reassembler_ignores_a_repeated_chunk_and_counts_it_once() -> None:
    chunks = Reassembler(max_bytes=10 * PART)
    _, hdrs, data = _partial("a", "w", 1)
    for _ in range(5):
        assert chunks.add(hdrs, data, owner="a") is None
    assert chunks.holding("a") == PART


def _delivery(subject: str, hdrs: dict[str, str], data: bytes, stream_seq: int) -> Msg:
    """A JetStream message as a pull consumer receives it (its reply names its stream seq)."""
    reply = f"$JS.ACK.{CLOUD_STREAM}.{SERVICE}.1.{stream_seq}.{stream_seq}.0.0"
    return Msg(_client=None, subject=subject, reply=reply, data=data, headers=hdrs)  # type: ignore[arg-type]


async def test_a_redelivered_or_resent_chunk_never_grows_what_the_consumer_holds() -> None:
    consumer = CloudConsumer("nats://unused", durable=SERVICE, max_chunk_bytes=10 * PART)
    done: list[Msg] = []
    chunk = _partial("edge-1", "w", 1)
    first = _delivery(*chunk, stream_seq=7)
    assert await consumer._accept(first, done) is None
    redelivered = _delivery(*chunk, stream_seq=7)  # after ack_wait: same stream sequence
    resent = _delivery(*chunk, stream_seq=9)  # sent again by the edge: a new stream sequence
    for _ in range(3):
        assert await consumer._accept(redelivered, done) is None
    assert await consumer._accept(resent, done) is None
    assert list(consumer._held) == ["edge-1/w"]
    assert list(consumer._held["edge-1/w"].values()) == [redelivered]  # one per chunk
    assert done == [resent]  # the copy is acked at once; the held one waits for its payload
    assert consumer._chunks.holding("edge-1") == PART


async def test_payloads_given_up_for_the_budget_release_their_held_messages_once() -> None:
    consumer = CloudConsumer("nats://unused", durable=SERVICE, max_chunk_bytes=3 * PART)
    done: list[Msg] = []
    sent = [_delivery(*_partial("edge-1", f"f{i}", i + 1), stream_seq=i + 1) for i in range(5)]
    for msg in sent:
        assert await consumer._accept(msg, done) is None
    assert done == sent[:2]  # the two oldest given up: acked ...
    assert consumer.dead_letters.count == 2  # ... and dead-lettered once each
    assert sorted(consumer._held) == ["edge-1/f2", "edge-1/f3", "edge-1/f4"]
    assert consumer._pending["edge-1"] == ["edge-1/f2", "edge-1/f3", "edge-1/f4"]
    assert consumer.tracker.seen("edge-1.hard-examples", 2, 1)  # a resend is a duplicate


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[NatsServer]:
    spec = HubSpec(
        name="hub",
        port=free_port(),
        leafnode_port=free_port(),
        monitor_port=free_port(),
        store_dir=tmp_path / "hub",
    )
    async with NatsServer(spec) as server:
        yield server


async def _publish(nc: NatsClient, messages: list[tuple[str, dict[str, str], bytes]]) -> None:
    js = nc.jetstream()
    for subject, hdrs, data in messages:
        await js.publish(subject, data, headers=hdrs)


async def test_one_edge_flooding_half_sent_payloads_never_evicts_another_edges_payload(
    hub: NatsServer,
) -> None:
    letters: list[DeadLetter] = []
    got: list[UplinkMessage] = []
    nc = await nats.connect(hub.url)
    try:

        async def on_letter(msg: Msg) -> None:
            letters.append(decode(DeadLetter, msg.data))

        await nc.subscribe(topics.cloud_dead_letter(SERVICE), cb=on_letter)
        budget = 6 * PART  # edge-2's half payload + five of edge-1's
        async with (
            CloudConsumer(hub.url, durable=SERVICE, max_chunk_bytes=budget) as consumer,
            ServiceTasks("test.chunk-limits") as tasks,
        ):

            async def consume() -> None:
                async for message in consumer.messages():
                    got.append(message)

            tasks.spawn(consume(), "consume")
            first, second = _whole("edge-2")
            flood = [_partial("edge-1", f"flood-{i}", i + 1) for i in range(12)]
            await _publish(nc, [first, *flood])
            await wait_for(lambda: len(letters) >= 7, what="edge-1's 7 oldest given up")
            await _publish(nc, [second])
            await wait_for(lambda: len(got) >= 1, what="edge-2's payload")
            # edge-2's payload is done: its share is free again, edge-1 gives up past it.
            await _publish(nc, [_partial("edge-1", f"after-{i}", 100 + i) for i in range(2)])
            await wait_for(lambda: len(letters) >= 8, what="edge-1's next oldest given up")
            info = await nc.jetstream().consumer_info(CLOUD_STREAM, SERVICE)
            held = list(consumer._held)
    finally:
        await nc.close()

    assert [(m.edge, m.message_id, m.payload) for m in got] == [
        ("edge-2", "keep", bytes(range(200)))
    ]
    assert hashlib.sha256(got[0].payload).hexdigest() == first[1][headers.SHA256]
    given_up = [f"edge-1/flood-{i}" for i in range(8)]
    assert [letter.reason.split(" ")[0] for letter in letters] == given_up
    assert all("chunk budget is full, edge-1 holds the most" in d.reason for d in letters)
    assert set(held) == {*(f"edge-1/after-{i}" for i in range(2))} | {
        f"edge-1/flood-{i}" for i in range(8, 12)
    }
    assert info.num_pending == 0
    assert info.num_ack_pending == 6  # what is given up is acked; only edge-1's held remain
