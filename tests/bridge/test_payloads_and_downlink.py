"""Large payloads both ways, priority while draining, and the durable downlink."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient

from bus.mqtt import MqttClient
from cloud_bridge import headers
from cloud_bridge.downlink import MODEL, CloudPublisher, EdgeDownlink
from cloud_bridge.ingest import split
from cloud_bridge.settings import BridgeSettings
from schemas import topics
from schemas.topics import TrafficClass
from tests.bridge.conftest import Rig
from tests.bridge.harness import Collector, bridge_for
from tests.support import wait_for

FIVE_MB = 5 * 1024 * 1024


async def test_five_megabyte_hard_example_arrives_whole_in_the_cloud(rig: Rig) -> None:
    blob = os.urandom(FIVE_MB)
    async with bridge_for(rig), Collector(rig.hub.url) as cloud:
        async with MqttClient(rig.broker_url, client_id="camera") as client:
            await client.publish(topics.hard_examples("vision"), blob, timeout=30)
        await wait_for(lambda: len(cloud.got) >= 1, timeout=60, what="reassembled")
    assert len(cloud.got) == 1
    assert cloud.got[0].traffic_class is TrafficClass.HARD_EXAMPLES
    assert hashlib.sha256(cloud.got[0].payload).digest() == hashlib.sha256(blob).digest()


async def test_model_sent_while_edge_offline_arrives_retained_and_whole(rig: Rig) -> None:
    model = os.urandom(FIVE_MB)
    async with CloudPublisher(rig.hub.url) as cloud:
        await cloud.publish(rig.edge_id, MODEL, "detector", payload=model)
        await cloud.publish(None, MODEL, "classifier", payload=b"v2")
    async with bridge_for(rig) as bridge:
        downlink = bridge.downlink
        assert downlink is not None
        await wait_for(lambda: downlink.delivered >= 2, timeout=60, what="downlink delivered")
    # A subscriber that comes later still gets the latest model (retained).
    async with MqttClient(rig.broker_url, client_id="late-pipeline") as late:
        got: dict[str, bytes] = {}
        async with late.subscribe(topics.model_update_filter()) as sub, asyncio.timeout(10):
            async for message in sub:
                got[message.topic] = message.payload
                if len(got) == 2:
                    break
    assert (
        hashlib.sha256(got[topics.model_update("detector")]).digest()
        == hashlib.sha256(model).digest()
    )
    assert got[topics.model_update("classifier")] == b"v2"


async def test_bridge_status_is_published_retained_and_printed(rig: Rig) -> None:
    import subprocess
    import sys

    async with bridge_for(rig, status_interval_s=0.2) as bridge:
        await wait_for(lambda: bridge.link_up, timeout=10, what="link up")
        status = await bridge.status()
        assert set(status.classes) == {c.value for c in TrafficClass}
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "edgefabric.cli",
                "bridge",
                "status",
                "--broker",
                rig.broker_url,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert "link up" in done.stdout, done.stdout + done.stderr
    assert "hard-examples" in done.stdout


async def test_twin_errors_and_documents_reach_the_cloud_as_twin_traffic(rig: Rig) -> None:
    sent = {
        topics.twin_errors("plc-1"): b'{"reason": "denied"}',
        topics.twin_document("plc-1"): b"{}",
    }
    async with bridge_for(rig), Collector(rig.hub.url) as cloud:
        async with MqttClient(rig.broker_url, client_id="twin") as client:
            for topic, payload in sent.items():
                await client.publish(topic, payload)
        await wait_for(lambda: len(cloud.got) >= 2, timeout=30, what="twin traffic forwarded")
    assert {m.topic: m.payload for m in cloud.got} == sent
    assert {m.traffic_class for m in cloud.got} == {TrafficClass.TWIN}


@dataclass
class _FakeMsg:
    """What `EdgeDownlink` reads of a JetStream message (the broker is not reached here)."""

    subject: str
    data: bytes
    headers: dict[str, str]
    acked: int = 0

    async def ack(self) -> None:
        self.acked += 1


async def test_the_downlink_holds_one_message_per_chunk_and_forgets_abandoned_payloads() -> None:
    """A JetStream redelivery replaces the held message instead of piling up; a payload the
    budget gives up leaves nothing held (its messages stay unacked and come back later)."""
    downlink = EdgeDownlink(
        BridgeSettings(edge_id="e", leaf_url="nats://127.0.0.1:1"),
        bus=MqttClient("mqtt://127.0.0.1:1", client_id="unused"),
        nc=NatsClient,
    )
    subject = topics.downlink("e", MODEL, "m")
    parts = list(split(subject, bytes(5000), {headers.MSG_ID: "w"}, 1024))
    first = [_FakeMsg(s, d, dict(h)) for s, d, h in parts[:2]]
    for msg in [*first, *first]:  # the second round is JetStream redelivering
        await downlink._deliver(msg)  # type: ignore[arg-type]  # noqa: SLF001
    (held,) = downlink._held.values()  # noqa: SLF001
    assert len(held) == 2 and not any(m.acked for m in first)
    whole_id = parts[0][2][headers.CHUNK_OF]
    downlink._abandoned(whole_id, "")  # what the reassembler's budget calls  # noqa: SLF001
    assert not downlink._held  # noqa: SLF001
