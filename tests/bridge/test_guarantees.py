"""The bridge's promises, against real hub and leaf nats-servers and Mosquitto."""

from __future__ import annotations

import nats

from cloud_bridge.settings import CLOUD_STREAM
from schemas.bridge import LinkState
from tests.bridge.conftest import Rig
from tests.bridge.harness import (
    Collector,
    assert_exactly,
    bridge_for,
    bridge_process,
    publish_numbered,
)
from tests.support import wait_for

N = 2000


async def test_delivers_every_message_once_in_order(rig: Rig) -> None:
    async with bridge_for(rig) as bridge, Collector(rig.hub.url) as cloud:
        await publish_numbered(rig.broker_url, 0, N)
        await wait_for(lambda: len(cloud.got) >= N, timeout=30, what="all delivered")
        assert bridge.forwarded == N
    assert_exactly(cloud.got, N)


async def test_hub_restart_loses_and_duplicates_nothing(rig: Rig) -> None:
    async with bridge_for(rig) as bridge, Collector(rig.hub.url) as cloud:
        await publish_numbered(rig.broker_url, 0, N // 2)
        await wait_for(lambda: len(cloud.got) > 0, timeout=30, what="first delivered")
        await rig.hub.stop()
        await publish_numbered(rig.broker_url, N // 2, N)
        await wait_for(lambda: bridge.ingested == N, timeout=30, what="all queued on the edge")
        await rig.hub.start()
        await wait_for(lambda: len(cloud.got) >= N, timeout=30, what="all delivered")
    assert_exactly(cloud.got, N)


async def test_blackholed_link_is_noticed_and_loses_nothing(rig: Rig) -> None:
    async with bridge_for(rig) as bridge, Collector(rig.hub.url) as cloud:
        await publish_numbered(rig.broker_url, 0, N // 2)
        await wait_for(lambda: len(cloud.got) >= N // 2, timeout=30, what="first half")
        rig.proxy.blackhole()
        await publish_numbered(rig.broker_url, N // 2, N)
        await wait_for(lambda: bridge.link.state is LinkState.DOWN, timeout=8, what="link down")
        assert len(cloud.got) < N
        rig.proxy.restore()
        await wait_for(lambda: len(cloud.got) >= N, timeout=30, what="all delivered")
        assert bridge.link.state is LinkState.UP
    assert_exactly(cloud.got, N)


async def test_bridge_kill9_mid_drain_loses_and_duplicates_nothing(rig: Rig) -> None:
    count = 5000
    async with Collector(rig.hub.url) as cloud:
        process = bridge_process(rig)
        await process.start()
        await rig.hub.stop()  # build a backlog on the edge
        await publish_numbered(rig.broker_url, 0, count)
        await rig.hub.start()
        await wait_for(lambda: len(cloud.got) > 0, timeout=30, what="drain started")
        await process.kill9()
        assert len(cloud.got) < count
        async with bridge_process(rig):
            await wait_for(lambda: len(cloud.got) >= count, timeout=60, what="all delivered")
    assert_exactly(cloud.got, count)


async def test_leaf_kill9_loses_and_duplicates_nothing(rig: Rig) -> None:
    async with bridge_for(rig) as bridge, Collector(rig.hub.url) as cloud:
        await publish_numbered(rig.broker_url, 0, N // 2)
        await wait_for(lambda: bridge.ingested >= N // 4, timeout=30, what="some queued")
        await rig.leaf.kill()
        await rig.leaf.start()
        await publish_numbered(rig.broker_url, N // 2, N)
        await wait_for(lambda: len(cloud.got) >= N, timeout=60, what="all delivered")
    assert_exactly(cloud.got, N)


async def test_consumer_restart_still_drops_resends_past_the_duplicate_window(rig: Rig) -> None:
    async with bridge_for(rig), Collector(rig.hub.url, durable="svc") as cloud:
        await publish_numbered(rig.broker_url, 0, 10)
        await wait_for(lambda: len(cloud.got) >= 10, timeout=30, what="delivered")
    nc = await nats.connect(rig.hub.url)
    try:
        js = nc.jetstream()
        stored = await js.get_msg(CLOUD_STREAM, seq=1)
        # An edge re-send after the window: same queue position, a message id JetStream forgot.
        assert stored.subject is not None
        await js.publish(
            stored.subject,
            stored.data or b"",
            headers=dict(stored.headers or {}) | {"Nats-Msg-Id": "forgotten"},
        )
        assert (await js.stream_info(CLOUD_STREAM)).state.messages == 11
    finally:
        await nc.close()
    async with Collector(rig.hub.url, durable="svc") as restarted:
        await wait_for(lambda: restarted.consumer.duplicates == 1, timeout=10, what="dropped")
        assert restarted.got == []
