"""The nats-server launcher: hub and leaf as child processes, JetStream domains, restarts."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from bus.errors import NatsServerError
from bus.nats_server import CLOUD_DOMAIN, HubSpec, LeafSpec, NatsServer
from bus.ports import free_port
from tests.conftest import NatsLink


def test_leaf_config_connects_out_with_its_own_domain_and_fast_pings(tmp_path: Path):
    text = LeafSpec(
        edge_id="site-9",
        port=1,
        monitor_port=2,
        store_dir=tmp_path,
        hub_leaf_urls=("nats-leaf://hub:7422",),
    ).render()
    assert 'domain: "site-9"' in text
    assert '"nats-leaf://hub:7422"' in text
    assert 'ping_interval: "2s"' in text


def test_hub_config_accepts_leaf_connections_in_the_cloud_domain(tmp_path: Path):
    text = HubSpec(
        name="hub", port=1, leafnode_port=7422, monitor_port=3, store_dir=tmp_path
    ).render()
    assert f'domain: "{CLOUD_DOMAIN}"' in text
    assert '"127.0.0.1:7422"' in text


async def test_a_leaf_connects_to_its_hub_and_each_has_its_own_jetstream(nats_link: NatsLink):
    assert await nats_link.hub.leaf_connections() == 1
    nc = await nats.connect(nats_link.leaf.url)
    try:
        edge = await nc.jetstream(domain=nats_link.edge_id).account_info()
        cloud = await nc.jetstream(domain=CLOUD_DOMAIN).account_info()
    finally:
        await nc.close()
    assert edge.domain == nats_link.edge_id
    assert cloud.domain == CLOUD_DOMAIN


async def test_the_leaf_reconnects_after_the_hub_is_killed_and_restarted(nats_link: NatsLink):
    await nats_link.hub.kill()
    assert not nats_link.hub.running
    await nats_link.hub.start()
    await nats_link.hub.wait_leaf_connected(timeout=15)
    assert await nats_link.hub.leaf_connections() == 1


async def test_a_server_that_cannot_start_fails_with_its_log_named(tmp_path: Path):
    taken = free_port()
    spec = HubSpec(
        name="a",
        port=taken,
        leafnode_port=free_port(),
        monitor_port=free_port(),
        store_dir=tmp_path / "a",
    )
    async with NatsServer(spec):
        clash = HubSpec(
            name="b",
            port=taken,
            leafnode_port=free_port(),
            monitor_port=free_port(),
            store_dir=tmp_path / "b",
        )
        with pytest.raises(NatsServerError, match=r"b\.nats\.log"):
            await NatsServer(clash, start_timeout=5).start()
