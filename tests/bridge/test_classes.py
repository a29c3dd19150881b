"""Traffic classes: priority while draining, per-class limits and drop policy, bandwidth cap."""

from __future__ import annotations

import asyncio
import json
import time

from bus.mqtt import MqttClient
from cloud_bridge.bridge import CloudBridge
from cloud_bridge.forward import TokenBucket
from cloud_bridge.settings import PRIORITY, ClassLimits
from schemas import topics
from schemas.bridge import LinkState
from schemas.topics import TrafficClass
from tests.bridge.conftest import Rig
from tests.bridge.harness import Collector, bridge_for
from tests.support import wait_for

TOPIC_OF = {
    TrafficClass.CONTROL: lambda n: topics.fl_update(f"job-{n % 2}"),
    TrafficClass.TWIN: lambda n: topics.device_status(f"dev-{n % 2}"),
    TrafficClass.RESULTS: lambda n: topics.result("p", f"dev-{n % 2}"),
    TrafficClass.HARD_EXAMPLES: lambda n: topics.hard_examples(f"p{n % 2}"),
}


async def _outage(rig: Rig, bridge: CloudBridge) -> None:
    """Stop the hub once the bridge saw it up, and wait until the bridge knows it is down."""
    await wait_for(lambda: bridge.link.state is LinkState.UP, timeout=15, what="link up")
    await rig.hub.stop()
    await wait_for(lambda: bridge.link.state is LinkState.DOWN, timeout=15, what="link down")


async def _publish(rig: Rig, traffic_class: TrafficClass, count: int, size: int = 0) -> None:
    async with MqttClient(rig.broker_url, client_id=f"producer-{traffic_class}") as client:
        for n in range(count):
            body = {"message_id": f"{traffic_class}-{n}", "n": n, "pad": "x" * size}
            await client.publish(TOPIC_OF[traffic_class](n), json.dumps(body).encode(), timeout=30)


async def test_backlog_of_every_class_drains_control_then_twin_then_results_then_hard(
    rig: Rig,
) -> None:
    per_class = 60
    async with bridge_for(rig, batch=20) as bridge, Collector(rig.hub.url) as cloud:
        await _outage(rig, bridge)
        for traffic_class in reversed(PRIORITY):  # lowest first: order comes from the drain
            await _publish(rig, traffic_class, per_class)
        total = per_class * len(PRIORITY)
        await wait_for(lambda: bridge.ingested == total, timeout=30, what="all queued")
        await rig.hub.start()
        await wait_for(lambda: len(cloud.got) >= total, timeout=60, what="all delivered")
    ranks = [PRIORITY.index(m.traffic_class) for m in cloud.got]
    assert ranks == sorted(ranks), "a lower class went before a higher one"
    assert len(cloud.got) == total


async def test_full_hard_example_queue_drops_the_oldest_and_counts_them(rig: Rig) -> None:
    sent, size = 30, 100_000  # 3 MB into a 1 MiB class budget
    limits = {TrafficClass.HARD_EXAMPLES: ClassLimits(max_bytes=1 << 20)}
    async with bridge_for(rig, limits=limits) as bridge, Collector(rig.hub.url) as cloud:
        await _outage(rig, bridge)
        await _publish(rig, TrafficClass.HARD_EXAMPLES, sent, size)
        await wait_for(lambda: bridge.ingested == sent, timeout=30, what="all ingested")
        kept = (await bridge.status()).classes[TrafficClass.HARD_EXAMPLES.value].queued
        assert 0 < kept < sent
        await rig.hub.start()
        await wait_for(lambda: len(cloud.got) >= kept, timeout=60, what="the kept delivered")
        status = await bridge.status()
    assert [json.loads(m.payload)["n"] for m in cloud.got] == list(range(sent - kept, sent))
    assert status.classes[TrafficClass.HARD_EXAMPLES.value].dropped == sent - kept


async def test_full_control_queue_is_never_dropped_the_broker_holds_the_rest(rig: Rig) -> None:
    sent, size = 20, 100_000  # 2 MB into a 1 MiB class budget
    limits = {TrafficClass.CONTROL: ClassLimits(max_bytes=1 << 20, drop_oldest=False)}
    async with bridge_for(rig, limits=limits) as bridge, Collector(rig.hub.url) as cloud:
        await _outage(rig, bridge)
        await _publish(rig, TrafficClass.CONTROL, sent, size)
        await wait_for(lambda: bridge.ingested >= 5, timeout=30, what="queue filling")
        assert bridge.ingested < sent  # full: not acked to MQTT, the broker keeps the rest
        await rig.hub.start()
        await wait_for(lambda: len(cloud.got) >= sent, timeout=60, what="all delivered")
        status = await bridge.status()
    assert [json.loads(m.payload)["n"] for m in cloud.got] == list(range(sent))
    assert status.classes[TrafficClass.CONTROL.value].dropped == 0


async def test_token_bucket_holds_bytes_to_its_rate() -> None:
    bucket = TokenBucket(rate=1_000_000)
    started = time.monotonic()
    for _ in range(4):
        await bucket.take(250_000)
    # A fresh bucket has no burst saved: 1 MB at 1 MB/s takes at least ~1 s (lower bound only).
    assert time.monotonic() - started >= 0.9


async def test_bulk_classes_are_capped_and_the_rest_are_not(rig: Rig) -> None:
    count, size, rate = 8, 50_000, 100_000  # 400 kB of hard examples at 100 kB/s
    async with (
        bridge_for(rig, bulk_bytes_per_s=rate) as bridge,
        Collector(rig.hub.url) as cloud,
    ):
        await _outage(rig, bridge)
        await _publish(rig, TrafficClass.HARD_EXAMPLES, count, size)
        await _publish(rig, TrafficClass.RESULTS, count, size)
        await wait_for(lambda: bridge.ingested == 2 * count, timeout=30, what="all queued")
        await rig.hub.start()
        back = time.monotonic()
        await wait_for(lambda: len(cloud.got) >= 2 * count, timeout=60, what="all delivered")
        took = time.monotonic() - back
    hard = [m for m in cloud.got if m.traffic_class is TrafficClass.HARD_EXAMPLES]
    forwarded_bytes = sum(len(m.payload) for m in hard)
    # At most one second of burst saved while idle: the rest waits for the rate.
    assert took >= (forwarded_bytes - rate) / rate * 0.8, (took, forwarded_bytes)
    assert cloud.got[0].traffic_class is TrafficClass.RESULTS  # uncapped, and higher


async def test_bucket_without_a_rate_never_waits() -> None:
    bucket = TokenBucket(rate=0)
    async with asyncio.timeout(1):
        await bucket.take(10**12)
