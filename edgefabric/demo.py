"""`edgefabric demo`: the whole stack on embedded defaults, telling its story live.

A simulated Modbus PLC and an OPC UA machine feed their mappers; readings reach the twin and
an ONNX anomaly pipeline on the embedded broker; results travel through the edge's leaf
nats-server to the cloud hub, where a cloud consumer receives them. Then the acts: an app sets
a desired value that reaches the PLC register through the twin; the cloud hub is killed and
restarted while the edge keeps working, and the cloud catches up with nothing lost or
duplicated; a phone offloads digit images that the edge answers, asking the cloud's deeper
model about the hard ones (joint inference); the edge and three simulated sites run three
rounds of federated learning through the bridge and the hub; the cloud sends a retrained edge
model down, the edge hot-swaps it while serving, and an operator rolls it back. Everything
binds to 127.0.0.1 on free ports, in a temporary data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from bus.mqtt import MqttClient
from bus.ports import free_port
from edgefabric.cloud import Cloud
from edgefabric.config import BrokerSettings, CloudConfig, EdgeConfig, HubSettings, LeafSettings
from edgefabric.demo_acts import (
    PLC,
    federated_act,
    joint_inference_act,
    model_update_act,
    outage_act,
    twin_write_act,
)
from edgefabric.demo_hostile import hostile_input_act
from edgefabric.demo_view import DemoCounts, live_view, watch_bus, watch_cloud
from edgefabric.edge import Edge
from mappers.simulators.modbus_plc import ModbusPlcSimulator
from mappers.simulators.opcua_machine import OpcUaMachineSimulator
from pipelines.hem import HemSettings
from pipelines.offload_settings import OffloadModelSettings, OffloadSettings
from pipelines.settings import (
    ModelUpdateSettings,
    PipelinesSettings,
    StreamingPipelineSettings,
)
from schemas import topics
from schemas.signing import generate_signing_key, write_key_pair

EDGE_ID = "demo-site"
MILL = "mill-1"

DEVICES_YAML = """\
# The demo's devices, in edgefabric's native format (see docs/mappers.md).
models:
  - name: plc-model
    properties:
      - {{name: temperature, type: double, unit: degC}}
      - {{name: pressure, type: double, unit: bar}}
      - {{name: vibration, type: double, unit: g}}
      - {{name: setpoint, type: double, accessMode: ReadWrite, min: 0, max: 300, unit: degC}}
  - name: mill-model
    properties:
      - {{name: spindle-speed, type: double, unit: rpm}}
      - {{name: temperature, type: double, unit: degC}}
devices:
  - name: {plc}
    model: plc-model
    protocol: modbus
    modbus: {{host: 127.0.0.1, port: {plc_port}}}
    collect_cycle_ms: 50
    report_to_cloud: true
    properties:
      - {{name: temperature, modbus: {{offset: 0, dataType: int16, scale: 0.1}}}}
      - {{name: pressure, modbus: {{offset: 1, dataType: uint16, scale: 0.01}}}}
      - {{name: vibration, modbus: {{offset: 2, dataType: int16, scale: 0.001}}}}
      - {{name: setpoint, modbus: {{offset: 10, dataType: int16, scale: 0.1}}}}
  - name: {mill}
    model: mill-model
    protocol: opcua
    opcua: {{url: "{mill_url}"}}
    collect_cycle_ms: 500
    properties:
      - {{name: spindle-speed, opcua: {{nodeID: "ns=2;s=Spindle.Speed"}}}}
      - {{name: temperature, opcua: {{nodeID: "ns=2;i=1001"}}}}
"""


def _signing_key(root: Path) -> tuple[Path, Path]:
    """The demo cloud's model-signing key pair (private, public), made fresh in `root`."""
    private, public = root / "keys" / "cloud.pem", root / "keys" / "cloud.pub"
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True)
        write_key_pair(generate_signing_key(), private, public)
    return private, public


def _configs(root: Path, plc_port: int, mill_url: str) -> tuple[CloudConfig, EdgeConfig]:
    hub = HubSettings(port=free_port(), leafnode_port=free_port(), monitor_port=free_port())
    devices = root / "devices.yaml"
    devices.write_text(
        DEVICES_YAML.format(plc=PLC, plc_port=plc_port, mill=MILL, mill_url=mill_url)
    )
    edge = EdgeConfig(
        edge_id=EDGE_ID,
        data_dir=root / "edge",
        broker=BrokerSettings(port=free_port()),
        leaf=LeafSettings(
            port=free_port(),
            monitor_port=free_port(),
            hub_leaf_urls=[f"nats-leaf://127.0.0.1:{hub.leafnode_port}"],
        ),
        devices=[devices],
        pipelines=PipelinesSettings(
            streaming=[
                StreamingPipelineSettings(
                    name="vibration-anomaly", device=PLC, property="vibration", window=32, hop=8
                )
            ],
            offload=OffloadSettings(
                models=[
                    OffloadModelSettings(
                        name="digits", hem=HemSettings(method="Threshold", threshold=0.6)
                    )
                ]
            ),
            updates=ModelUpdateSettings(trusted_keys=[_signing_key(root)[1]]),
        ),
    )
    return CloudConfig(data_dir=root / "cloud", hub=hub), edge


_CATCH_UP_S = 5.0
"""How long the demo waits at its end for results still on their way to the cloud."""


async def _after(delay: float, act: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(delay)
    await act()


async def run_demo(
    *, duration: float | None, data_dir: Path | None = None, out: TextIO = sys.stdout
) -> DemoCounts:
    """Run the demo for `duration` seconds (forever when None) and return what it measured.

    The acts start at fixed times (twin write at 2 s, joint inference at 3 s, three federated
    rounds at 3.5 s, a model update and rollback at 5 s, a 4 s link outage at 8 s); a duration
    under 12 s leaves the last three out.
    """
    counts = DemoCounts()
    with tempfile.TemporaryDirectory(prefix="edgefabric-demo-") as tmp:
        root = data_dir or Path(tmp)
        plc_port, mill_port = free_port(), free_port()
        async with (
            ModbusPlcSimulator(port=plc_port, live=True) as _plc,
            OpcUaMachineSimulator(port=mill_port, live=True) as mill,
        ):
            cloud_cfg, edge_cfg = _configs(root, plc_port, mill.url)
            out.write(
                f"edgefabric demo: edge {EDGE_ID!r} with a Modbus PLC and an OPC UA mill; "
                f"broker {edge_cfg.broker.client_url}, cloud hub {cloud_cfg.hub.url}\n"
                f"readings on {topics.readings_filter()}, results on {topics.results_filter()}, "
                f"cloud subjects {topics.uplink_filter()}; data in {root}\n"
            )
            out.flush()
            async with (
                Cloud(cloud_cfg) as cloud,
                Edge(edge_cfg) as edge,
                MqttClient(
                    edge_cfg.broker.client_url, client_id="demo-view", protocol="3.1.1"
                ) as view_bus,
            ):
                await _run_acts(
                    cloud,
                    edge=edge,
                    bus=view_bus,
                    counts=counts,
                    out=out,
                    duration=duration,
                    signing_key=_signing_key(root)[0],
                )
                counts.forwarded_to_cloud = edge.bridge.forwarded if edge.bridge else 0
    return counts


async def _run_acts(
    cloud: Cloud,
    *,
    edge: Edge,
    bus: MqttClient,
    counts: DemoCounts,
    out: TextIO,
    duration: float | None,
    signing_key: Path,
) -> None:
    started = time.monotonic()
    fits = duration is None or duration >= 12
    async with asyncio.TaskGroup() as watchers:
        cloud_side = watchers.create_task(watch_cloud(cloud, counts), name="demo.watch-cloud")
        edge_side = watchers.create_task(watch_bus(bus, counts), name="demo.watch-bus")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration), asyncio.TaskGroup() as group:
                _start_acts(
                    group,
                    cloud=cloud,
                    edge=edge,
                    bus=bus,
                    counts=counts,
                    out=out,
                    started=started,
                    fits=fits,
                    signing_key=signing_key,
                )
        # Results published just before the end are still on their way up: count the edge's
        # results as of now, and give the cloud a bounded moment to receive them.
        edge_side.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CATCH_UP_S):
                while not counts.results_ids_edge <= counts.results_ids_cloud:
                    counts.cloud_received.clear()
                    await counts.cloud_received.wait()
        cloud_side.cancel()


def _start_acts(
    group: asyncio.TaskGroup,
    *,
    cloud: Cloud,
    edge: Edge,
    bus: MqttClient,
    counts: DemoCounts,
    out: TextIO,
    started: float,
    fits: bool,
    signing_key: Path,
) -> None:
    group.create_task(live_view(edge, counts, out, started), name="demo.view")
    group.create_task(_after(2, lambda: twin_write_act(bus, counts, out)), name="demo.act.twin")
    group.create_task(
        _after(3, lambda: joint_inference_act(bus, counts, out)), name="demo.act.joint"
    )
    group.create_task(
        _after(2.5, lambda: hostile_input_act(bus, counts, out)), name="demo.act.hostile"
    )
    if fits:
        group.create_task(
            _after(
                3.5,
                lambda: federated_act(cloud, bus, counts, out, edge_id=EDGE_ID),
            ),
            name="demo.act.federated",
        )
        group.create_task(
            _after(
                5,
                lambda: model_update_act(
                    cloud, bus, counts, out, edge_id=EDGE_ID, signing_key=signing_key
                ),
            ),
            name="demo.act.model-update",
        )
        group.create_task(
            _after(8, lambda: outage_act(cloud, counts, out, seconds=4)),
            name="demo.act.outage",
        )
