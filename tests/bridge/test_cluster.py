"""A 3-node hub cluster: the hub node the edge's leaf is connected to dies, nothing is lost."""

from __future__ import annotations

import contextlib
from pathlib import Path

import nats

from bus.nats_server import HubSpec, LeafSpec, NatsServer
from bus.ports import free_port
from cloud_bridge.cloud_consumer import ensure_cloud_stream
from cloud_bridge.errors import NATS_ERRORS
from cloud_bridge.settings import CloudStreamSettings
from tests.bridge.conftest import Rig
from tests.bridge.harness import Collector, assert_exactly, bridge_for, publish_numbered
from tests.bridge.proxy import BlackHoleProxy
from tests.support import wait_for, wait_for_async

N = 3000


def _cluster(tmp: Path) -> list[HubSpec]:
    ports = [(free_port(), free_port(), free_port(), free_port()) for _ in range(3)]
    routes = tuple(f"nats-route://127.0.0.1:{p[3]}" for p in ports)
    return [
        HubSpec(
            name=f"hub-{i}",
            port=client,
            leafnode_port=leaf,
            monitor_port=monitor,
            store_dir=tmp / f"hub-{i}" / "js",
            cluster_port=cluster,
            routes=routes,
        )
        for i, (client, leaf, monitor, cluster) in enumerate(ports)
    ]


async def test_leaf_fails_over_when_its_hub_node_is_killed_and_loses_nothing(
    tmp_path: Path, mosquitto_url: str
) -> None:
    specs = _cluster(tmp_path)
    hubs = [NatsServer(spec, start_timeout=30) for spec in specs]
    leaf = NatsServer(
        LeafSpec(
            edge_id="edge-1",
            port=free_port(),
            monitor_port=free_port(),
            store_dir=tmp_path / "edge-1" / "js",
            hub_leaf_urls=tuple(f"nats-leaf://127.0.0.1:{s.leafnode_port}" for s in specs),
        )
    )
    replicated = CloudStreamSettings(replicas=3)
    async with contextlib.AsyncExitStack() as stack:
        for hub in hubs:
            await stack.enter_async_context(hub)
        await stack.enter_async_context(leaf)
        counts = [0, 0, 0]

        async def connected_node() -> bool:
            counts[:] = [await hub.leaf_connections() for hub in hubs]
            return sum(counts) == 1

        await wait_for_async(connected_node, timeout=30, what="leaf connected to one node")
        victim = hubs[counts.index(1)]

        async def stream_created() -> bool:
            # The cluster elects its JetStream meta leader a few seconds after the nodes start.
            nc = await nats.connect([h.url for h in hubs])
            try:
                await ensure_cloud_stream(nc, replicated)
            except NATS_ERRORS:
                return False
            finally:
                await nc.close()
            return True

        await wait_for_async(stream_created, timeout=60, what="R3 stream created")
        others = ",".join(h.url for h in hubs if h is not victim)
        rig = Rig(
            victim,
            leaf,
            BlackHoleProxy(port=0, target_host="", target_port=0),
            mosquitto_url,
            "edge-1",
            tmp_path,
        )
        async with bridge_for(rig) as bridge, Collector(others, stream=replicated) as cloud:
            await publish_numbered(mosquitto_url, 0, N // 2)
            await wait_for(lambda: len(cloud.got) > 0, timeout=60, what="first delivered")
            await victim.kill()
            await publish_numbered(mosquitto_url, N // 2, N)
            await wait_for(lambda: len(cloud.got) >= N, timeout=90, what="all delivered")
            assert bridge.forwarded == N
        assert_exactly(cloud.got, N)
