"""A hub, an edge leaf reaching it through a black-hole-able proxy, and Mosquitto."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus.nats_server import HubSpec, LeafSpec, NatsServer
from bus.ports import free_port
from tests.bridge.proxy import BlackHoleProxy


@dataclass
class Rig:
    """Everything an uplink test needs, started."""

    hub: NatsServer
    leaf: NatsServer
    proxy: BlackHoleProxy
    broker_url: str
    edge_id: str
    tmp_path: Path


@pytest.fixture
async def rig(tmp_path: Path, mosquitto_url: str) -> AsyncIterator[Rig]:
    hub_spec = HubSpec(
        name="hub",
        port=free_port(),
        leafnode_port=free_port(),
        monitor_port=free_port(),
        store_dir=tmp_path / "hub" / "js",
    )
    proxy = BlackHoleProxy(
        port=free_port(), target_host="127.0.0.1", target_port=hub_spec.leafnode_port
    )
    leaf_spec = LeafSpec(
        edge_id="edge-1",
        port=free_port(),
        monitor_port=free_port(),
        store_dir=tmp_path / "edge-1" / "js",
        hub_leaf_urls=(f"nats-leaf://127.0.0.1:{proxy.port}",),
    )
    hub, leaf = NatsServer(hub_spec), NatsServer(leaf_spec)
    async with proxy, hub, leaf:
        await hub.wait_leaf_connected(timeout=15)
        yield Rig(hub, leaf, proxy, mosquitto_url, "edge-1", tmp_path)
