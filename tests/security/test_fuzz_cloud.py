"""Cloud services fuzzed with what a compromised edge could put on the hub.

Promise (docs/security.md threat model): a message from one edge never crashes or wedges a
cloud service that serves every edge. Each hostile message is acknowledged and lands on
``ef.cloud.dead-letter.{service}`` with its reason; the valid traffic of every edge keeps
flowing, exactly once. Everything runs against a real hub ``nats-server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from aggregator.coordinator import Coordinator
from aggregator.job import JobConfig
from aggregator.trainer import init_weights
from aggregator.transport import NatsCloudTransport, NatsEdgeLink
from bus.lifecycle import ServiceTasks
from bus.nats_server import HubSpec, NatsServer
from bus.ports import free_port
from cloud_bridge import headers
from cloud_bridge.cloud_consumer import MAX_PENDING_PER_EDGE, CloudConsumer
from cloud_bridge.dead_letters import CloudDeadLetters
from cloud_bridge.ingest import split
from cloud_bridge.settings import CLOUD_STREAM
from cloud_bridge.uplink_origin import position
from pipelines.cloud_inference import SERVICE as SERVICE_INFER
from pipelines.cloud_inference import CloudInferenceService, CloudInferReply
from pipelines.digits import bundled_models
from pipelines.model_slot import LoadedModel, ModelSlot, make_session
from schemas import topics
from schemas.codec import decode
from schemas.federated import FitInstruction, FitUpdate, decode_fit, encode_update
from schemas.frames import pack
from schemas.status import DeadLetter
from schemas.tensor import encode_tensor
from tests.bridge.harness import Collector
from tests.security.fuzz import hostile_payloads
from tests.support import wait_for

SERVICE = "fuzzed"


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


class Letters:
    """Every dead letter published on the hub, by service."""

    def __init__(self) -> None:
        self.got: list[DeadLetter] = []

    async def on_message(self, msg: Msg) -> None:
        self.got.append(decode(DeadLetter, msg.data))

    def of(self, service: str) -> list[DeadLetter]:
        return [letter for letter in self.got if letter.service == service]


@pytest.fixture
async def client(hub: NatsServer) -> AsyncIterator[tuple[NatsClient, Letters]]:
    nc = await nats.connect(hub.url, connect_timeout=2)
    letters = Letters()
    await nc.subscribe(topics.cloud_dead_letter_filter(), cb=letters.on_message)
    await nc.flush()
    try:
        yield nc, letters
    finally:
        await nc.close()


# ---- the uplink consumer ------------------------------------------------------------------

_SEQ = re.compile(r"(?:[0-9]{1,20}\.)?[0-9]{1,20}")


def _garbage_sequences() -> list[str]:
    """``Ef-Edge-Seq`` values that are not ``[epoch.]seq``: drawn, and hand-picked."""
    drawn: list[str] = []

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    )
    @given(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30))
    def collect(value: str) -> None:
        assume(not _SEQ.fullmatch(value))
        drawn.append(value)

    collect()
    fixed = ["x", "1.2.3", "-1", "1e5", "0x10", "9" * 5000, "1." + "9" * 21, ".", "1.", "²"]
    return fixed + drawn


Published = tuple[str, dict[str, str], bytes]


def _valid(edge: str, n: int) -> Published:
    payload = json.dumps({"message_id": f"{edge}-{n}", "n": n}).encode()
    hdrs = {headers.MSG_ID: f"{edge}-{n}", headers.EDGE: edge, headers.EDGE_SEQ: f"1.{n}"}
    return topics.uplink(edge, topics.TrafficClass.RESULTS, "p", "dev"), hdrs, payload


def _hostile() -> list[Published]:
    """Every message must be refused: bad subjects, headers, chunks; spoofed edges."""
    up = topics.uplink("edge-1", topics.TrafficClass.RESULTS, "p", "dev")
    chunk = {headers.CHUNK_OF: "w", headers.SHA256: "0" * 64}
    out: list[Published] = [
        (up, {headers.EDGE_SEQ: value}, b"garbage seq") for value in _garbage_sequences()
    ]
    out += [
        ("ef.up.edge-1.bogus.p.dev", {}, b"unknown class"),
        ("ef.up.edge-1.results", {}, b"too few tokens"),
        ("ef.up.$edge.results.p.dev", {}, b"not a name"),
        (up, {headers.EDGE: "edge-2", headers.EDGE_SEQ: "999999.1"}, b"spoofs edge-2"),
        (up, {headers.EDGE: "", headers.EDGE_SEQ: "1.1"}, b"empty edge"),
        (up, {headers.CHUNK: "x/y", **chunk}, b"chunk"),
        (up, {headers.CHUNK: "5/2", **chunk}, b"chunk"),
        (up, {headers.CHUNK: "0/65537", **chunk}, b"huge count"),
        (up, {headers.CHUNK: "0/99999999999", **chunk}, b"huge count"),
        (up, {headers.CHUNK: "0/2"}, b"no whole id, no digest"),
        (up, {headers.CHUNK: "0/1", **chunk}, b"sha256 mismatch"),
    ]
    return out


async def _publish(nc: NatsClient, messages: list[Published]) -> None:
    js = nc.jetstream()
    for subject, hdrs, payload in messages:
        await js.publish(subject, payload, headers=hdrs or None)


async def test_cloud_consumer_dead_letters_hostile_uplink_messages_and_keeps_valid_traffic_once(
    hub: NatsServer, client: tuple[NatsClient, Letters]
) -> None:
    nc, letters = client
    hostile = _hostile()
    big = bytes(range(256)) * 40  # 10 KiB: chunked in 3 KiB parts
    big_subject = topics.uplink("edge-2", topics.TrafficClass.HARD_EXAMPLES, "hard-examples", "v")
    base = {headers.MSG_ID: "big-1", headers.EDGE: "edge-2", headers.EDGE_SEQ: "1.1000"}
    chunks = [
        (subject, hdrs | {headers.EDGE_SEQ: f"1.{1000 + i}"}, data)
        for i, (subject, data, hdrs) in enumerate(split(big_subject, big, base, 3 << 10))
    ]
    # edge-1 tries to spoil edge-2's chunked payload with a chunk of the same whole id.
    spoiler = (
        topics.uplink("edge-1", topics.TrafficClass.HARD_EXAMPLES, "hard-examples", "v"),
        {**chunks[0][1], headers.EDGE: "edge-1", headers.MSG_ID: "spoil", headers.EDGE_SEQ: "1.5"},
        b"X" * len(chunks[0][2]),
    )
    # ... and keeps more chunked payloads half-sent than the consumer holds for one edge.
    hoard = [
        (
            topics.uplink("edge-1", topics.TrafficClass.HARD_EXAMPLES, "h", "v"),
            {headers.CHUNK: "0/2", headers.CHUNK_OF: f"hoard-{i}", headers.SHA256: "0" * 64},
            b"part",
        )
        for i in range(MAX_PENDING_PER_EDGE + 4)
    ]
    valid = [_valid(edge, n) for n in range(1, 41) for edge in ("edge-1", "edge-2", "ünïcødé")]
    mixed: list[Published] = []
    for i, message in enumerate(valid):
        mixed.append(message)
        if i < len(hostile):
            mixed.append(hostile[i])
    mixed += hostile[len(valid) :]
    async with Collector(hub.url, durable=SERVICE) as cloud:
        await _publish(nc, [*mixed[:100], spoiler, *hoard, *chunks, *mixed[100:]])
        expected = len(hostile) + 5  # the spoiler and the oldest 4 hoarded chunks given up
        await wait_for(
            lambda: len(cloud.got) >= len(valid) + 1 and len(letters.of(SERVICE)) >= expected,
            timeout=15,
            what=f"{len(valid) + 1} messages and {expected} dead letters",
        )
        await _publish(nc, [_valid("edge-2", 2000)])  # edge-1's spoofs spoiled nothing
        await wait_for(lambda: cloud.got[-1].edge_sequence == 2000, what="a valid message after")
        info = await nc.jetstream().consumer_info(CLOUD_STREAM, SERVICE)

    got = [(m.edge, m.payload) for m in cloud.got[:-1]]
    assert sorted(got) == sorted([(s.split(".")[2], p) for s, _, p in valid] + [("edge-2", big)])
    assert len(cloud.got) == len(valid) + 2  # exactly once each
    whole = next(m for m in cloud.got if m.payload == big)
    assert (whole.message_id, whole.traffic_class) == ("big-1", "hard-examples")
    refused = letters.of(SERVICE)
    assert len(refused) == expected == cloud.consumer.dead_letters.count
    assert all(letter.reason for letter in refused)
    assert sum("Ef-Edge-Seq" in d.reason for d in refused) == len(_garbage_sequences())
    assert sum("is not the subject's edge" in d.reason for d in refused) == 2
    assert sum("given up" in d.reason for d in refused) == 5
    # Nothing blocks the durable consumer: all delivered, only the hoarder's last 16 held.
    assert info.num_pending == 0
    assert info.num_ack_pending == MAX_PENDING_PER_EDGE
    # A non-ASCII edge name's dedupe state persists (its KV put used to fail, wedging acks).
    async with CloudConsumer(hub.url, durable=SERVICE) as again:
        assert again.tracker.seen("ünïcødé.results", 40, 1)


def test_every_drawn_sequence_is_refused_by_the_consumer_rule() -> None:
    """The generator only yields values the consumer must refuse (else the count is off)."""

    for value in _garbage_sequences():
        with pytest.raises(ValueError, match="Ef-Edge-Seq"):
            position({headers.EDGE_SEQ: value})
    assert position({headers.EDGE_SEQ: "3.17"}) == (3, 17)


# ---- cloud inference ----------------------------------------------------------------------

FEATURES = 64
"""Inputs of the bundled digits cloud model."""


def _hostile_tensors() -> list[bytes]:
    """Tensor frames the model cannot take: wrong shapes, empty, nan/inf, past float32."""
    drawn: list[bytes] = []
    dims = st.lists(st.integers(0, 70), min_size=0, max_size=4)
    dtypes = st.sampled_from(["<f4", "<f8", "u1", "<i8", "<f2"])

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    )
    @given(dims, dtypes)
    def collect(shape: list[int], dtype: str) -> None:
        fits = len(shape) in (1, 2) and shape[-1] == FEATURES and 0 not in shape
        assume(not fits and int(np.prod(shape)) < 20_000)
        drawn.append(encode_tensor(np.ones(shape, dtype=dtype)))

    collect()
    poisoned = [np.full(FEATURES, v) for v in (np.nan, np.inf, -np.inf, 1e300)]
    return [*drawn, *(encode_tensor(x) for x in poisoned)]


async def test_cloud_inference_answers_hostile_requests_with_errors_and_dead_letters(
    hub: NatsServer, client: tuple[NatsClient, Letters]
) -> None:
    nc, letters = client
    cloud_path = bundled_models()[1]
    slot = ModelSlot("digits-cloud", LoadedModel("c1", make_session(cloud_path.read_bytes())))
    oversized = encode_tensor(np.zeros((200, FEATURES), dtype=np.float32))  # 51 KiB > 32 KiB
    hostile = [
        *dict.fromkeys(p for p in hostile_payloads({"x": 1}, lambda _: False) if len(p) < 1 << 20),
        *_hostile_tensors(),
        oversized,
    ]
    valid = encode_tensor(np.zeros(FEATURES, dtype=np.float32))
    subject = topics.cloud_infer("digits-cloud")
    async with CloudInferenceService(
        hub.url, {"digits-cloud": slot}, max_request_bytes=32 << 10
    ) as service:
        for i, payload in enumerate(hostile):
            if i % 3:
                answer = await nc.request(subject, payload, timeout=10)
                error = CloudInferReply.model_validate_json(answer.data)
                assert (error.status, bool(error.error)) == ("error", True)
            else:  # no reply subject: only the dead letter says what happened
                await nc.publish(subject, payload)
            if i % 10 == 0:
                ok = CloudInferReply.model_validate_json(
                    (await nc.request(subject, valid, timeout=10)).data
                )
                assert (ok.status, len(ok.predictions)) == ("ok", 1)
        await wait_for(
            lambda: len(letters.of(SERVICE_INFER)) >= len(hostile),
            what=f"{len(hostile)} dead letters from cloud inference",
        )
        ok = CloudInferReply.model_validate_json(
            (await nc.request(subject, valid, timeout=10)).data
        )
    assert ok.status == "ok"
    refused = letters.of(SERVICE_INFER)
    assert len(refused) == len(hostile) == service.refused == service.dead_letters.count
    assert sorted(d.payload_size for d in refused) == sorted(len(p) for p in hostile)
    assert all(d.topic == subject and d.reason for d in refused)
    assert any("at most 32768" in d.reason for d in refused)
    assert any("nan or inf" in d.reason for d in refused)
    assert any("(batch, features) expected" in d.reason for d in refused)


async def test_cloud_inference_never_answers_outside_an_inbox(
    hub: NatsServer, client: tuple[NatsClient, Letters]
) -> None:
    """An edge may publish requests but not onto other edges' subjects; naming one as its reply
    subject must not make the cloud user publish there for it."""
    nc, letters = client
    cloud_path = bundled_models()[1]
    slot = ModelSlot("digits-cloud", LoadedModel("c1", make_session(cloud_path.read_bytes())))
    valid = encode_tensor(np.zeros(FEATURES, dtype=np.float32))
    subject = topics.cloud_infer("digits-cloud")
    bounced: list[str] = []

    async def keep(msg: Msg) -> None:
        bounced.append(msg.subject)

    targets = (
        topics.uplink("edge-2", topics.TrafficClass.RESULTS, "p", "d"),
        topics.downlink(None, "model", "digits-edge"),
    )
    sub = await nc.subscribe("ef.>", cb=keep)
    try:
        async with CloudInferenceService(hub.url, {"digits-cloud": slot}):
            for target in targets:
                await nc.publish(subject, valid, reply=target)
            await wait_for(lambda: len(letters.of(SERVICE_INFER)) >= 2, what="dead letters")
            ok = CloudInferReply.model_validate_json(
                (await nc.request(subject, valid, timeout=10)).data
            )
            await nc.flush()
    finally:
        await sub.unsubscribe()
    assert ok.status == "ok"  # answered after, on an inbox: the refusals were not a crash
    assert not [s for s in bounced if s in targets]
    assert all("is not an inbox" in d.reason for d in letters.of(SERVICE_INFER))


# ---- federated learning: the coordinator ----------------------------------------------------

JOB = "fuzz-job"


def _update(ins: FitInstruction, edge: str, weights: list[np.ndarray], **header: object) -> bytes:
    fields: dict[str, object] = {
        "job": ins.job,
        "round": ins.round,
        "edge": edge,
        "instruction": ins.message_id,
        "num_examples": 10,
        **header,
    }
    return encode_update(FitUpdate.model_validate(fields), weights)


def _hostile_updates(ins: FitInstruction, w: list[np.ndarray]) -> list[tuple[str, bytes]]:
    """What compromised edge ``c`` (sampled) and stranger ``z`` send in a round."""
    nan = [np.full_like(x, np.nan) for x in w]
    layers = pack(FitUpdate(job=JOB, round=1, edge="c", num_examples=1), b"EFW1\xff\xff\xff\xff")
    garbage = hostile_payloads({"job": JOB, "round": 1}, lambda _: False, examples=10)
    return [
        ("c", b"garbage first: c's answer for the round"),
        *(("c", p) for p in dict.fromkeys(garbage) if len(p) < 1 << 20),
        ("c", bytes(3 << 20)),  # 3 MiB, chunked: reassembled, then refused
        ("c", _update(ins, "c", [np.ones((3, 3), dtype=np.float32)])),  # wrong shape
        ("c", _update(ins, "c", nan)),  # nan weights
        ("c", _update(ins, "c", w, job="other-job")),
        ("c", _update(ins, "c", w, round=ins.round + 5)),  # late
        ("c", _update(ins, "c", w, instruction="replayed-from-an-earlier-run")),
        ("c", _update(ins, "a", w)),  # c speaks for a
        ("z", _update(ins, "z", w)),  # not enrolled
        ("z", layers),  # 2**32-1 layers claimed
    ]


async def test_hostile_federated_updates_are_dead_lettered_and_the_round_aggregates_the_rest(
    hub: NatsServer, client: tuple[NatsClient, Letters]
) -> None:
    nc, letters = client
    config = JobConfig(job=JOB, edges=["a", "b", "c"], rounds=1, round_timeout_s=15)
    initial = init_weights(0, 0)
    sink = CloudDeadLetters("aggregator", lambda: nc)
    async with contextlib.AsyncExitStack() as stack:
        transport = await stack.enter_async_context(NatsCloudTransport(hub.url, JOB))
        links = {
            e: await stack.enter_async_context(NatsEdgeLink(hub.url, edge=e, job=JOB))
            for e in ("a", "b", "c", "z")
        }
        coordinator = await stack.enter_async_context(
            Coordinator(config, transport, initial=initial, dead_letters=sink)
        )
        tasks = await stack.enter_async_context(ServiceTasks("test.fl"))
        tasks.spawn(coordinator.run(), "job")
        async with asyncio.timeout(15):
            instruction, weights = decode_fit(await anext(links["a"].globals()))
        hostile = _hostile_updates(instruction, weights)
        for edge, frame in hostile:
            await links[edge].send_update(frame)
        for edge, delta in (("a", 1.0), ("b", 3.0)):
            await links[edge].send_update(_update(instruction, edge, [x + delta for x in weights]))
        await wait_for(lambda: coordinator.records, timeout=15, what="the round's record")
        await wait_for(lambda: len(letters.of("aggregator")) >= len(hostile), what="dead letters")

    (record,) = coordinator.records
    assert (record.status, record.answered, sorted(record.rejected)) == (
        "completed",
        ["a", "b"],
        ["c", "z"],
    )
    assert all(np.allclose(g, x + 2.0) for g, x in zip(coordinator.weights, initial, strict=True))
    refused = letters.of("aggregator")
    assert len(refused) == len(hostile) == sink.count
    assert sorted(d.payload_size for d in refused) == sorted(len(f) for _, f in hostile)
    reasons = " | ".join(d.reason for d in refused)
    for expected in ("wrong shape", "nan or inf", "for job other-job", "late", "not sampled"):
        assert expected in reasons
    assert record.late == 2
