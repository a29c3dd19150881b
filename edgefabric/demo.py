"""`edgefabric demo`: the whole stack on embedded defaults, with a live view.

A simulated Modbus PLC feeds a mapper; readings reach the twin and an ONNX anomaly pipeline on
the embedded broker; results travel through the edge's leaf nats-server to the cloud hub,
where a cloud consumer receives them. Everything binds to 127.0.0.1 on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bus.mqtt import MqttClient
from bus.ports import free_port
from bus.subscription import Overflow
from edgefabric.cloud import Cloud, ResultsSink
from edgefabric.config import (
    BrokerSettings,
    CloudConfig,
    EdgeConfig,
    HubSettings,
    LeafSettings,
)
from edgefabric.edge import Edge
from mappers.device import DeviceInstance, ModbusConnection, ModbusVisitor, PropertySpec
from mappers.simulators.modbus_plc import ModbusPlcSimulator
from pipelines.settings import PipelinesSettings, StreamingPipelineSettings
from schemas import topics

EDGE_ID = "demo-site"
DEVICE = "plc-1"


def demo_device(port: int) -> DeviceInstance:
    """The simulated PLC as a device instance (see `ModbusPlcSimulator` for the map)."""
    return DeviceInstance(
        name=DEVICE,
        modbus=ModbusConnection(host="127.0.0.1", port=port),
        collect_cycle_ms=50,
        properties=[
            PropertySpec(
                name="temperature", unit="degC", modbus=ModbusVisitor(offset=0, scale=0.1)
            ),
            PropertySpec(
                name="pressure",
                unit="bar",
                modbus=ModbusVisitor(offset=1, scale=0.01, signed=False),
            ),
            PropertySpec(name="vibration", unit="g", modbus=ModbusVisitor(offset=2, scale=0.001)),
        ],
    )


@dataclass
class DemoCounts:
    """What the live view shows and `--summary-json` writes."""

    readings: int = 0
    results: int = 0
    anomalies: int = 0
    forwarded_to_cloud: int = 0
    received_in_cloud: int = 0
    last: dict[str, str] = field(default_factory=dict)


async def _watch_bus(bus: MqttClient, counts: DemoCounts) -> None:
    async with bus.subscribe("ef/#", maxsize=5000, overflow=Overflow.DROP_OLDEST) as sub:
        async for message in sub:
            if message.topic.startswith("ef/readings/"):
                counts.readings += 1
                prop = message.topic.rsplit("/", 1)[1]
                with contextlib.suppress(ValueError, KeyError):
                    counts.last[prop] = f"{json.loads(message.payload)['value']:.3f}"
            elif message.topic.startswith("ef/results/"):
                counts.results += 1


async def _watch_cloud(cloud: Cloud, counts: DemoCounts) -> None:
    sink = ResultsSink()
    async with cloud.consumer("demo-dashboard") as consumer:
        async for message in consumer.messages():
            result = sink.handle(message)
            if result is not None:
                counts.received_in_cloud = sink.received
                if result.label == "anomaly":
                    counts.anomalies += 1


async def _live_view(edge: Edge, counts: DemoCounts, out: TextIO, started: float) -> None:
    while True:
        await asyncio.sleep(1.0)
        counts.forwarded_to_cloud = edge.bridge.forwarded if edge.bridge else 0
        values = " ".join(f"{k}={v}" for k, v in sorted(counts.last.items()))
        out.write(
            f"[{time.monotonic() - started:5.1f}s] readings {counts.readings:6d} | "
            f"results {counts.results:5d} (anomalies {counts.anomalies}) | "
            f"forwarded {counts.forwarded_to_cloud:5d} | cloud got {counts.received_in_cloud:5d}"
            f" | {values}\n"
        )
        out.flush()


async def run_demo(
    *, duration: float | None, data_dir: Path | None = None, out: TextIO = sys.stdout
) -> DemoCounts:
    """Run the demo for `duration` seconds (forever when None) and return the counts."""
    counts = DemoCounts()
    with tempfile.TemporaryDirectory(prefix="edgefabric-demo-") as tmp:
        root = data_dir or Path(tmp)
        hub = HubSettings(port=free_port(), leafnode_port=free_port(), monitor_port=free_port())
        cloud_cfg = CloudConfig(data_dir=root / "cloud", hub=hub)
        edge_cfg = EdgeConfig(
            edge_id=EDGE_ID,
            data_dir=root / "edge",
            broker=BrokerSettings(port=free_port()),
            leaf=LeafSettings(
                port=free_port(),
                monitor_port=free_port(),
                hub_leaf_urls=[f"nats-leaf://127.0.0.1:{hub.leafnode_port}"],
            ),
            pipelines=PipelinesSettings(
                streaming=[
                    StreamingPipelineSettings(
                        name="vibration-anomaly",
                        device=DEVICE,
                        property="vibration",
                        window=32,
                        hop=8,
                    )
                ]
            ),
        )
        sim_port = free_port()
        started = time.monotonic()
        out.write(
            f"edgefabric demo: edge {EDGE_ID!r}, broker {edge_cfg.broker.client_url}, "
            f"hub {hub.url}, data in {root}\n"
        )
        async with (
            Cloud(cloud_cfg) as cloud,
            ModbusPlcSimulator(port=sim_port, live=True) as _plc,
            Edge(edge_cfg, extra_devices=[demo_device(sim_port)]) as edge,
            MqttClient(
                edge_cfg.broker.client_url, client_id="demo-view", protocol="3.1.1"
            ) as view_bus,
        ):
            out.write(
                f"readings on {topics.readings_filter()}, results on "
                f"{topics.results_filter()}, cloud subjects {topics.uplink_filter()}\n"
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration), asyncio.TaskGroup() as group:
                    group.create_task(_watch_bus(view_bus, counts), name="demo.watch-bus")
                    group.create_task(_watch_cloud(cloud, counts), name="demo.watch-cloud")
                    group.create_task(_live_view(edge, counts, out, started), name="demo.view")
            counts.forwarded_to_cloud = edge.bridge.forwarded if edge.bridge else 0
    return counts
