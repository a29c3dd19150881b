"""Twin <-> cloud through the real bridge: a hub and leaf nats-server, Mosquitto, a Modbus PLC.

The edge is the composition root (`edgefabric.edge.Edge`: twin, Modbus mapper, bridge on the
fixture's leaf); the cloud is `twin.cloud.CloudTwins` on the hub (uplink consumer + downlink
publisher).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bus.mqtt import MqttClient
from bus.nats_server import LeafSpec
from edgefabric.config import EdgeConfig
from edgefabric.edge import Edge
from mappers.device import DeviceInstance
from mappers.simulators.modbus_plc import ModbusPlcSimulator, RegisterKind
from schemas import topics
from schemas.readings import DeviceState
from schemas.twin import TwinDocument, TwinError, TwinErrorCode, TwinSource
from tests.conftest import NatsLink
from tests.mappers.helpers import modbus_device
from tests.support import collect, wait_for
from twin.client import TwinClient
from twin.cloud import CloudTwins
from twin.service import TwinService

RW = {"accessMode": "ReadWrite"}
DEVICE = "plc"


def _plc(port: int) -> DeviceInstance:
    return modbus_device(
        port,
        ("setpoint", {"offset": 10, "scale": 0.1}, {**RW, "type": "double", "max": 300}),
        ("speed", {"offset": 12}, {**RW, "type": "int", "max": 5000}),
        ("temperature", {"offset": 0, "scale": 0.1}, {"type": "double"}),
        name=DEVICE,
        collect_cycle_ms=200,
    )


@dataclass
class Site:
    edge: Edge
    twin: TwinService
    app: TwinClient
    app_bus: MqttClient
    cloud: CloudTwins
    edge_id: str

    def cloud_doc(self) -> TwinDocument | None:
        return self.cloud.document(self.edge_id, DEVICE)

    def edge_doc(self) -> TwinDocument:
        return self.twin.store.document(DEVICE)


@contextlib.asynccontextmanager
async def _site(
    link: NatsLink, broker_url: str, plc: ModbusPlcSimulator, data_dir: Path
) -> AsyncIterator[Site]:
    leaf = link.leaf.spec
    assert isinstance(leaf, LeafSpec)
    config = EdgeConfig.model_validate(
        {
            "edge_id": link.edge_id,
            "data_dir": str(data_dir),
            "broker": {"embedded": False, "url": broker_url},
            "leaf": {"run": False, "port": leaf.port},
        }
    )
    async with (
        Edge(config, extra_devices=[_plc(plc.port)]) as edge,
        MqttClient(broker_url, client_id="app") as app_bus,
        TwinClient(app_bus, name="app") as app,
        CloudTwins(link.hub.url) as cloud,
    ):
        assert edge.twin is not None
        yield Site(edge, edge.twin, app, app_bus, cloud, link.edge_id)


def _settled(doc: TwinDocument | None, **values: float) -> bool:
    """Desired and reported are `values` for every named property, and the delta is empty."""
    if doc is None or doc.delta():
        return False
    for name, value in values.items():
        prop = doc.properties.get(name)
        if prop is None or prop.desired is None or prop.reported is None:
            return False
        if prop.desired.value != value or prop.reported.value != value:
            return False
    return True


async def test_reported_state_and_device_status_reach_the_cloud(
    nats_link: NatsLink, mosquitto_url: str, modbus_plc: ModbusPlcSimulator, tmp_path: Path
) -> None:
    await modbus_plc.set(RegisterKind.HOLDING, 0, [215])
    async with _site(nats_link, mosquitto_url, modbus_plc, tmp_path / "edge") as site:

        def reported_temperature() -> object:
            doc = site.cloud_doc()
            prop = doc.properties.get("temperature") if doc else None
            return prop is not None and prop.reported is not None and prop.reported.value == 21.5

        await wait_for(reported_temperature, timeout=30, what="reported temperature in the cloud")
        await wait_for(
            lambda: (
                (s := site.cloud.status(site.edge_id, DEVICE)) is not None
                and s.state is DeviceState.ONLINE
            ),
            timeout=30,
            what="device status in the cloud",
        )
        doc = site.cloud_doc()
        assert doc is not None
        assert doc.state is DeviceState.ONLINE
        assert doc.properties["setpoint"].type == "double"


async def test_desired_set_in_the_cloud_reaches_the_register_and_reported_comes_back(
    nats_link: NatsLink, mosquitto_url: str, modbus_plc: ModbusPlcSimulator, tmp_path: Path
) -> None:
    async with _site(nats_link, mosquitto_url, modbus_plc, tmp_path / "edge") as site:
        await wait_for(lambda: site.cloud_doc() is not None, timeout=30, what="first document")
        site.cloud.set_desired(site.edge_id, DEVICE, {"setpoint": 42.5})
        await wait_for(
            lambda: _settled(site.cloud_doc(), setpoint=42.5),
            timeout=30,
            what="the cloud sees desired = reported = 42.5",
        )
        assert await modbus_plc.get(RegisterKind.HOLDING, 10, 1) == [425]
        desired = site.edge_doc().properties["setpoint"].desired
        assert desired is not None
        assert desired.source is TwinSource.CLOUD
        assert (desired.version.edge, desired.version.cloud) == (0, 1)


async def test_after_an_outage_each_property_keeps_the_later_change_on_both_sides(
    nats_link: NatsLink, mosquitto_url: str, modbus_plc: ModbusPlcSimulator, tmp_path: Path
) -> None:
    """docs/twin.md, "Cloud sync policy": concurrent desired edits, later timestamp wins."""
    async with _site(nats_link, mosquitto_url, modbus_plc, tmp_path / "edge") as site:
        await wait_for(lambda: site.cloud_doc() is not None, timeout=30, what="first document")
        site.cloud.set_desired(site.edge_id, DEVICE, {"setpoint": 20.0, "speed": 100})
        await wait_for(
            lambda: _settled(site.cloud_doc(), setpoint=20.0, speed=100),
            timeout=30,
            what="the pre-outage cloud change settled",
        )

        await nats_link.hub.kill()
        async with collect(site.app_bus, topics.twin_errors(DEVICE)) as errors:
            site.cloud.set_desired(site.edge_id, DEVICE, {"speed": 700})  # t0, loses
            assert (await site.app.set(DEVICE, {"setpoint": 30.0})).ok  # t1, loses
            assert (await site.app.set(DEVICE, {"speed": 300})).ok  # t2, wins
            site.cloud.set_desired(site.edge_id, DEVICE, {"setpoint": 40.0})  # t3, wins
            # Edge autonomy: the edge's own changes reach the device while the hub is away.
            await wait_for(lambda: _settled(site.edge_doc(), setpoint=30.0, speed=300), 10)
            assert site.cloud.pending == 2

            await nats_link.hub.start()
            await nats_link.hub.wait_leaf_connected(timeout=15)
            await wait_for(
                lambda: _settled(site.cloud_doc(), setpoint=40.0, speed=300),
                timeout=45,
                what="the cloud converged on the later change of each property",
            )
            await errors.wait(lambda ms: ms, "the losing cloud change reported as a conflict")

        assert site.cloud.pending == 0
        assert _settled(site.edge_doc(), setpoint=40.0, speed=300)
        assert await modbus_plc.get(RegisterKind.HOLDING, 10, 1) == [400]
        assert await modbus_plc.get(RegisterKind.HOLDING, 12, 1) == [300]
        props = site.edge_doc().properties
        assert props["setpoint"].desired is not None
        assert props["setpoint"].desired.source is TwinSource.CLOUD
        assert props["speed"].desired is not None
        assert props["speed"].desired.source is TwinSource.APP
        (conflict,) = errors.decoded(TwinError)
        assert conflict.code is TwinErrorCode.CONFLICT
        assert set(conflict.properties) == {"speed"}
