"""An edge and a cloud built from their configs, with a TLS leaf link and per-edge logins,
carry a reading's result from a Modbus register to the cloud, and desired state back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bus.ports import free_port
from cloud_bridge.downlink import TWIN_DESIRED, CloudPublisher
from edgefabric.cloud import Cloud, ResultsSink
from edgefabric.config import (
    BrokerSettings,
    CloudConfig,
    EdgeConfig,
    HubSettings,
    LeafSettings,
    LeafUserSettings,
)
from edgefabric.edge import Edge
from mappers.device import DeviceInstance, ModbusConnection, ModbusVisitor, PropertySpec
from mappers.simulators.modbus_plc import ModbusPlcSimulator, RegisterKind
from pipelines.settings import PipelinesSettings, StreamingPipelineSettings
from schemas.codec import encode
from schemas.twin import TwinDesiredSet
from tests.bridge.test_security import make_pki
from tests.support import wait_for


def test_a_secured_hub_needs_a_cloud_login_and_paired_tls_files():
    with pytest.raises(ValueError, match="cloud_password"):
        HubSettings(leaf_users=[LeafUserSettings(user="site-1", password="long-enough")])
    with pytest.raises(ValueError, match="leaf_tls_key"):
        HubSettings(leaf_tls_cert=Path("hub.pem"))
    with pytest.raises(ValueError, match="hub_password"):
        LeafSettings(hub_user="site-1")


async def test_configs_with_tls_and_edge_logins_carry_results_to_the_cloud(
    tmp_path: Path, modbus_plc: ModbusPlcSimulator
):
    pki = make_pki(tmp_path / "pki")
    hub = HubSettings(
        port=free_port(),
        leafnode_port=free_port(),
        monitor_port=free_port(),
        leaf_tls_cert=pki.cert,
        leaf_tls_key=pki.key,
        leaf_users=[LeafUserSettings(user="site-1", password="site-1-secret", edge="site-1")],
        cloud_password="cloud-secret",
    )
    edge = EdgeConfig(
        edge_id="site-1",
        data_dir=tmp_path / "edge",
        broker=BrokerSettings(port=free_port()),
        leaf=LeafSettings(
            port=free_port(),
            monitor_port=free_port(),
            hub_leaf_urls=[f"nats-leaf://127.0.0.1:{hub.leafnode_port}"],
            hub_user="site-1",
            hub_password="site-1-secret",
            hub_ca_file=pki.ca,
        ),
        pipelines=PipelinesSettings(
            streaming=[
                StreamingPipelineSettings(
                    name="vib", device="press", property="vibration", window=4, hop=1
                )
            ]
        ),
    )
    device = DeviceInstance(
        name="press",
        modbus=ModbusConnection(port=modbus_plc.port),
        collect_cycle_ms=20,
        properties=[PropertySpec(name="vibration", modbus=ModbusVisitor(offset=2, scale=0.001))],
    )
    await modbus_plc.set(RegisterKind.HOLDING, 2, [500])
    sink = ResultsSink()
    cloud_config = CloudConfig(data_dir=tmp_path / "cloud", hub=hub)
    assert "ef-cloud:cloud-secret@" in cloud_config.hub.url
    async with (
        Cloud(cloud_config) as cloud,
        Edge(edge, extra_devices=[device]) as site,
        cloud.consumer("secured") as consumer,
        CloudPublisher(cloud_config.hub.url) as publisher,
    ):
        async with asyncio.timeout(30):
            async for message in consumer.messages():
                if sink.handle(message) is not None:
                    break
        # Down: the site may not create its downlink consumer; the cloud provisioned it.
        desired = TwinDesiredSet(device="press", values={"setpoint": 1})
        await publisher.publish("site-1", TWIN_DESIRED, "press", payload=encode(desired))
        assert site.bridge is not None and site.bridge.downlink is not None
        downlink = site.bridge.downlink
        await wait_for(lambda: downlink.delivered >= 1, timeout=30, what="desired state down")
    assert sink.received == 1
    assert sink.latest[("site-1", "press")].outputs["score"] > 0
