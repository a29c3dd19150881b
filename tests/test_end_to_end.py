"""The walking skeleton's promise: a register value on a Modbus device reaches a cloud consumer
as the inference result derived from it, through mapper, broker, pipeline, leaf and hub."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from bus.ports import free_port
from cloud_bridge.cloud_consumer import CloudConsumer
from edgefabric.cloud import ResultsSink
from edgefabric.config import BrokerSettings, EdgeConfig, LeafSettings
from edgefabric.edge import Edge
from mappers.device import DeviceInstance, ModbusConnection, ModbusVisitor, PropertySpec
from mappers.simulators.modbus_plc import ModbusPlcSimulator, RegisterKind
from pipelines.anomaly_model import synthetic_normal_windows, train_anomaly_model
from pipelines.settings import PipelinesSettings, StreamingPipelineSettings
from schemas.inference import InferenceResult
from tests.conftest import NatsLink

WINDOW = 8


def _edge_config(tmp_path: Path, link: NatsLink) -> EdgeConfig:
    return EdgeConfig(
        edge_id=link.edge_id,
        data_dir=tmp_path / "edge",
        broker=BrokerSettings(port=free_port()),
        leaf=LeafSettings(run=False, port=link.leaf.spec.port),
        pipelines=PipelinesSettings(
            streaming=[
                StreamingPipelineSettings(
                    name="vib", device="press-7", property="vibration", window=WINDOW, hop=1
                )
            ]
        ),
    )


def _device(plc: ModbusPlcSimulator) -> DeviceInstance:
    return DeviceInstance(
        name="press-7",
        modbus=ModbusConnection(port=plc.port),
        collect_cycle_ms=20,
        properties=[PropertySpec(name="vibration", modbus=ModbusVisitor(offset=2, scale=0.001))],
    )


def _expected_score(vibration_g: float) -> float:
    params = train_anomaly_model(synthetic_normal_windows(WINDOW))
    z = (np.full(WINDOW, vibration_g, dtype=np.float32) - params.mean) / params.std
    return float((z**2).mean())


async def test_a_register_value_reaches_the_cloud_as_the_result_derived_from_it(
    tmp_path: Path, nats_link: NatsLink, modbus_plc: ModbusPlcSimulator
):
    sink = ResultsSink()
    seen: list[InferenceResult] = []
    # -1.5 g as a signed 16-bit register of 0.001 g counts: two's complement of -1500.
    await modbus_plc.set(RegisterKind.HOLDING, 2, [(-1500) & 0xFFFF])

    async with (
        CloudConsumer(nats_link.hub.url, durable="e2e") as consumer,
        Edge(_edge_config(tmp_path, nats_link), extra_devices=[_device(modbus_plc)]) as edge,
    ):

        async def first_result() -> None:
            async for message in consumer.messages():
                result = sink.handle(message)
                if result is not None:
                    seen.append(result)
                    return

        async with asyncio.timeout(30):
            await first_result()
        assert edge.mappers is not None
        assert edge.mappers.readings > 0

    result = seen[0]
    assert (result.device, result.pipeline) == ("press-7", "vib")
    assert result.outputs["score"] == np.float32(_expected_score(-1.5)).item() or abs(
        result.outputs["score"] - _expected_score(-1.5)
    ) <= 1e-3 * _expected_score(-1.5)
    assert result.label == "anomaly"
