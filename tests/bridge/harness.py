"""Helpers for bridge tests: publish numbered messages, collect what the cloud got, check it."""

from __future__ import annotations

import json
from collections import defaultdict
from types import TracebackType
from typing import Self

from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from cloud_bridge.bridge import CloudBridge
from cloud_bridge.cloud_consumer import CloudConsumer, UplinkMessage
from cloud_bridge.settings import BridgeSettings, CloudStreamSettings
from schemas import topics
from tests.bridge.conftest import Rig
from tests.chaos.processes import Child, python

DEVICES = 4


def bridge_for(rig: Rig, **overrides: object) -> CloudBridge:
    """An in-process bridge for the rig's edge (its MQTT client not yet connected)."""
    settings = BridgeSettings(edge_id=rig.edge_id, leaf_url=rig.leaf.url, **overrides)
    bus = MqttClient(
        rig.broker_url, client_id=f"{rig.edge_id}-bridge", clean_session=False, manual_ack=True
    )
    return CloudBridge(settings, bus=bus)


async def publish_numbered(broker_url: str, start: int, stop: int) -> None:
    """Publish results numbered [start, stop) round-robin over a few devices, QoS 1."""
    async with MqttClient(broker_url, client_id=f"producer-{start}") as client:
        for n in range(start, stop):
            payload = json.dumps({"message_id": f"m{n:07d}", "n": n}).encode()
            await client.publish(topics.result("p", f"dev-{n % DEVICES}"), payload)


class Collector:
    """Runs a cloud consumer in the background and keeps every message it yields."""

    def __init__(
        self, hub_url: str, durable: str = "test", stream: CloudStreamSettings | None = None
    ) -> None:
        self.consumer = CloudConsumer(hub_url, durable=durable, stream=stream)
        self.got: list[UplinkMessage] = []
        self._tasks = ServiceTasks("test.collector")

    async def __aenter__(self) -> Self:
        await self.consumer.__aenter__()
        await self._tasks.__aenter__()
        self._tasks.spawn(self._run(), "consume")
        return self

    async def _run(self) -> None:
        async for message in self.consumer.messages():
            self.got.append(message)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.__aexit__(exc_type, exc, tb)
        await self.consumer.__aexit__(exc_type, exc, tb)


def numbers(got: list[UplinkMessage]) -> list[int]:
    """The `n` of every collected message, in arrival order."""
    return [int(json.loads(m.payload)["n"]) for m in got]


def assert_exactly(got: list[UplinkMessage], count: int) -> None:
    """Delivered set == sent set, no duplicates, and order kept per topic."""
    seen = numbers(got)
    assert len(seen) == len(set(seen)), f"{len(seen) - len(set(seen))} duplicates"
    assert set(seen) == set(range(count)), f"missing {sorted(set(range(count)) - set(seen))[:10]}"
    per_topic: dict[str, list[int]] = defaultdict(list)
    for message, n in zip(got, seen, strict=True):
        per_topic[message.topic].append(n)
    for topic, ns in per_topic.items():
        assert ns == sorted(ns), f"order broken on {topic}"


def bridge_process(rig: Rig) -> Child:
    """`python -m cloud_bridge` as a child process, so a test can kill -9 it."""
    argv = python(
        "-m", "cloud_bridge", "--edge-id", rig.edge_id, "--broker", rig.broker_url,
        "--leaf", rig.leaf.url,
    )  # fmt: skip
    return Child("bridge", argv, ready=b"bridge ready")
