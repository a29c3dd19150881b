"""The cloud bridge's ingest fuzzed through Mosquitto and a real hub + leaf `nats-server`.

Promise: whatever is published on a topic under the uplink routes, the bridge keeps running and
each message is either forwarded to the cloud consumer exactly once, byte-identical, or
dead-lettered on ``ef/dead-letter/bridge`` with a reason; valid traffic flows afterwards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.mqtt import MqttClient
from cloud_bridge.bridge import CloudBridge
from cloud_bridge.downlink import FL_GLOBAL, TWIN_DESIRED, CloudPublisher
from cloud_bridge.downlink import MODEL as MODEL_KIND
from cloud_bridge.routes import message_id_of, queue_subject
from cloud_bridge.settings import BridgeSettings
from pipelines.hem import HemSettings
from pipelines.model_updates import ModelUpdater
from pipelines.offload import OffloadService
from pipelines.offload_settings import OffloadModelSettings, OffloadSettings
from pipelines.settings import ModelUpdateSettings
from schemas import topics
from schemas.codec import decode, encode
from schemas.errors import InvalidName, SchemaError
from schemas.models import ModelCommand
from schemas.twin import TwinDesiredSet
from tests.bridge.harness import Collector
from tests.conftest import NatsLink
from tests.security.fuzz import FIXED_HOSTILE, Observer, hostile_payloads, observing
from tests.support import collect, wait_for
from twin.service import TwinService

OFFLOAD = OffloadSettings(
    models=[OffloadModelSettings(cloud_model=None, hem=HemSettings(method="EdgeOnly"))]
)

LIMIT = 64 << 10
"""The bridge's payload limit in these tests (chunks of 16 KiB below it)."""

VALID_TOPICS = (
    topics.result("p", "dev-1"),
    topics.result("ünïcødé", "😀-sensor"),  # legal in MQTT and as a NATS token
    topics.result("p", "d" * 128),  # the longest name a token may be
    topics.hard_examples("vision"),
    topics.device_status("plc-1"),
    "ef/twin/plc-1/document",
    topics.fl_update("job-1"),
)
ODD_TOPICS = (
    "ef/results/a.b/dev",  # '.' would split the token
    "ef/results/p/with space",
    "ef/results/*/dev",
    "ef/results/p/>",
    "ef/results/$p/dev",
    "ef/results//dev",  # empty level
    "ef/results/p/" + "x" * 129,
    "ef/hard-examples/" + "v" * 20_000,  # a very long level
    "ef/twin/a.b/document",
    "ef/fl/j*b/update",
)


@dataclass
class Edge:
    """A bridge on Mosquitto + leaf, a cloud collector, and an observer of local MQTT."""

    bridge: CloudBridge
    link: NatsLink
    bus: MqttClient
    observer: Observer
    cloud: Collector
    broker_url: str


@pytest.fixture
async def edge(mosquitto_url: str, nats_link: NatsLink) -> AsyncIterator[Edge]:
    bridge_settings = BridgeSettings(
        edge_id=nats_link.edge_id,
        leaf_url=nats_link.leaf.url,
        chunk_bytes=16 << 10,
        max_payload_bytes=LIMIT,
    )
    bridge_bus = MqttClient(mosquitto_url, client_id="bridge", clean_session=False, manual_ack=True)
    async with (
        observing(mosquitto_url) as (bus, observer),
        CloudBridge(bridge_settings, bus=bridge_bus) as bridge,
        Collector(nats_link.hub.url) as cloud,
    ):
        yield Edge(bridge, nats_link, bus, observer, cloud, mosquitto_url)


def _uplink_payloads() -> list[bytes]:
    """Random bytes and JSON, the fixed hostile set, and sizes around the limit."""
    drawn: list[bytes] = []

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.binary(max_size=512) | st.from_regex(rb"\{\"message_id\": \"[a-z]{1,4}\"\}"))
    def collect(payload: bytes) -> None:
        drawn.append(payload)

    collect()
    sizes = [LIMIT, LIMIT + 1, 3 * LIMIT]
    return [*FIXED_HOSTILE, *drawn, *(bytes([n % 251]) * n for n in sizes)]


def _identity(topic: str, payload: bytes) -> str:
    """The bridge's idempotency key: the message's own id, else a hash of topic and bytes."""
    return message_id_of(payload) or hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()


def _forwardable(topic: str, payload: bytes) -> bool:
    try:
        queue_subject("edge-1", topic)
    except InvalidName:
        return False
    return len(payload) <= LIMIT


async def test_bridge_forwards_once_or_dead_letters_every_hostile_uplink_message(
    edge: Edge,
) -> None:
    payloads = _uplink_payloads()
    sent = [(topic, p) for p in payloads for topic in (VALID_TOPICS[len(p) % 7],)]
    sent += [(topic, payloads[n % len(payloads)]) for n, topic in enumerate(ODD_TOPICS)]
    sent += [(topic, b"\x00\xff odd bytes") for topic in VALID_TOPICS]
    for topic, payload in sent:
        await edge.bus.publish(topic, payload)

    # What the bridge promises: the first of each identity, byte-identical; the rest refused.
    expected: dict[str, tuple[str, bytes]] = {}
    refused = [(t, p) for t, p in sent if not _forwardable(t, p)]
    for topic, payload in sent:
        if _forwardable(topic, payload):
            expected.setdefault(_identity(topic, payload), (topic, payload))
    await wait_for(
        lambda: (
            len(edge.cloud.got) >= len(expected)
            and len(edge.observer.letters("bridge")) >= len(refused)
        ),
        timeout=30,
        what=f"{len(expected)} forwarded and {len(refused)} dead-lettered",
    )
    # Valid traffic still flows, and arrives after everything above in its class.
    last = json.dumps({"message_id": "after-fuzz", "n": 1}).encode()
    await edge.bus.publish(topics.result("p", "dev-1"), last)
    await wait_for(lambda: edge.cloud.got[-1].payload == last, what="the valid message after")

    got = [(m.topic, m.payload) for m in edge.cloud.got[:-1]]
    assert len(got) == len(expected)  # exactly once each
    assert sorted(got) == sorted(expected.values())  # byte-identical, on its own topic
    letters = edge.observer.letters("bridge")
    assert len(letters) == len(refused)
    assert sorted((d.topic, d.payload_size) for d in letters) == sorted(
        (t, len(p)) for t, p in refused
    )
    assert all(d.reason for d in letters)
    assert any("over the bridge's limit" in d.reason for d in letters)
    assert edge.bridge.rejected == len(refused)


# ---- downlink: hostile messages published by a cloud-side client -----------------------------

MODEL = "digits-edge"
DEVICE = "plc-9"
GARBAGE_SUBJECTS: list[tuple[str, dict[str, str]]] = [
    ("ef.down.edge-1.bogus.x", {}),  # unknown kind
    ("ef.down.all.nope", {}),  # broadcast, too few tokens
    ("ef.down.edge-1.model.m1.extra", {}),  # too many tokens
    ("ef.down.edge-1.twin-desired.$x", {}),  # not a name
    (f"ef.down.edge-1.model.{MODEL}", {"Ef-Chunk": "x/y", "Ef-Chunk-Of": "w1", "Ef-Sha256": "0"}),
    (f"ef.down.edge-1.model.{MODEL}", {"Ef-Chunk": "5/2", "Ef-Chunk-Of": "w2", "Ef-Sha256": "0"}),
    (f"ef.down.edge-1.model.{MODEL}", {"Ef-Chunk": "0/2"}),  # no whole id, no digest
    (f"ef.down.edge-1.model.{MODEL}", {"Ef-Chunk": "0/1", "Ef-Chunk-Of": "w4", "Ef-Sha256": "0"}),
]
"""Each must be acked (never redelivered) and dead-lettered by the bridge."""


async def test_downlink_dead_letters_poison_and_edge_services_refuse_hostile_payloads(
    edge: Edge, tmp_path: Path
) -> None:
    bus, observer = edge.bus, edge.observer
    desired = TwinDesiredSet(device=DEVICE, values={"t": 2}, correlation_id="d")
    twin_payloads = list(
        dict.fromkeys(hostile_payloads(json.loads(encode(desired)), _is_desired_set))
    )
    model_payloads = list(dict.fromkeys([*FIXED_HOSTILE, b"garbage", b"\x00" * 64]))
    async with (
        # The services' own client: the observer's ``ef/#`` would overlap their filters.
        MqttClient(edge.broker_url, client_id="services") as services,
        OffloadService(OFFLOAD, bus=services, nc=None) as offload,
        ModelUpdater(ModelUpdateSettings(), bus=services, slots=offload.slots()),
        TwinService(bus=services, db_path=tmp_path / "twin.db") as twin,
        CloudPublisher(edge.link.hub.url) as cloud,
    ):
        nc = await nats.connect(edge.link.hub.url)
        try:
            js = nc.jetstream()
            for n, (subject, hdrs) in enumerate(GARBAGE_SUBJECTS):
                await js.publish(subject, b"poison", headers={"Nats-Msg-Id": f"p{n}", **hdrs})
        finally:
            await nc.close()
        for payload in model_payloads:
            await cloud.publish("edge-1", MODEL_KIND, MODEL, payload=payload)
        for payload in twin_payloads:
            await cloud.publish("edge-1", TWIN_DESIRED, DEVICE, payload=payload)
        await cloud.publish("edge-1", FL_GLOBAL, "job-1", payload=b"\xff opaque")
        await cloud.publish("edge-1", TWIN_DESIRED, DEVICE, payload=encode(desired))

        await wait_for(
            lambda: (
                len(observer.letters("bridge")) >= len(GARBAGE_SUBJECTS)
                and len(observer.letters("models")) >= len(model_payloads)
                and len(observer.letters("twin")) >= len(twin_payloads)
            ),
            timeout=30,
            what="dead letters from the bridge, the model updater and the twin",
        )
        # Valid desired state after all that still lands; FL globals pass through opaque.
        await wait_for(
            lambda: twin.store.document(DEVICE).properties.get("t") is not None,
            what="desired value from the cloud stored",
        )
        assert observer.seen.get(topics.fl_global("job-1")) == [b"\xff opaque"]
        # The model updater still serves: a rollback command is answered.
        reply = "app/replies/rollback"
        command = ModelCommand(name=MODEL, reply_to=reply, correlation_id="r")
        async with collect(bus, reply) as replies:
            await bus.publish(topics.model_command(MODEL), encode(command))
            await replies.wait(lambda ms: ms, "the rollback answer")

    letters = observer.letters("bridge")
    assert len(letters) == len(GARBAGE_SUBJECTS)  # each exactly once: acked, not redelivered
    assert sorted(d.topic for d in letters) == sorted(s for s, _ in GARBAGE_SUBJECTS)
    assert all(d.reason for d in letters)
    assert len(observer.letters("models")) == len(model_payloads)
    assert len(observer.letters("twin")) == len(twin_payloads)
    assert all(d.reason for d in [*observer.letters("models"), *observer.letters("twin")])
    downlink = edge.bridge.downlink
    assert downlink is not None
    assert downlink.rejected == len(GARBAGE_SUBJECTS)


def _is_desired_set(payload: bytes) -> bool:
    try:
        return decode(TwinDesiredSet, payload).device == DEVICE
    except SchemaError:
        return False
