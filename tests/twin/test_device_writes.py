"""Desired -> mapper write -> reported confirms -> delta cleared, with the real Modbus mapper."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from bus.mqtt import MqttClient
from mappers.device import DeviceInstance
from mappers.service import MapperService
from mappers.simulators.modbus_plc import ModbusPlcSimulator, RegisterKind
from schemas import topics
from schemas.twin import TwinError, TwinErrorCode, WriteState
from tests.mappers.helpers import modbus_device
from tests.support import collect, wait_for
from tests.twin.helpers import Running, running_twin

RW = {"accessMode": "ReadWrite"}


def _plc(port: int) -> DeviceInstance:
    return modbus_device(
        port,
        ("setpoint", {"offset": 10, "scale": 0.1}, {**RW, "type": "double", "max": 300}),
        ("pump", {"register": "CoilRegister", "offset": 5}, {**RW, "type": "boolean"}),
        ("ghost", {"offset": 1500}, RW),
        ("temperature", {"offset": 0, "scale": 0.1}, {"type": "double"}),
        collect_cycle_ms=60_000,
    )


@contextlib.asynccontextmanager
async def _edge(url: str, db: Path, device: DeviceInstance) -> AsyncIterator[Running]:
    async with (
        running_twin(url, db, [device]) as run,
        MqttClient(url, client_id="mapper") as mapper_bus,
        MapperService([device], bus=mapper_bus),
    ):
        yield run


async def test_desired_reaches_the_register_and_reported_clears_the_delta(
    broker_url: str, tmp_path: Path, modbus_plc: ModbusPlcSimulator
) -> None:
    device = _plc(modbus_plc.port)
    async with _edge(broker_url, tmp_path / "twin.db", device) as run:
        result = await run.client.set("plc", {"setpoint": 42.5, "pump": True})
        assert result.ok
        await wait_for(lambda: not run.twin.store.document("plc").delta(), what="the delta cleared")
        assert await modbus_plc.get(RegisterKind.HOLDING, 10, 1) == [425]
        assert await modbus_plc.get(RegisterKind.COIL, 5, 1) == [True]
        document = await run.client.get("plc")
        for prop in ("setpoint", "pump"):
            assert document.properties[prop].write is not None
        await wait_for(
            lambda: all(
                p.write is not None and p.write.state is WriteState.DONE
                for n, p in run.twin.store.document("plc").properties.items()
                if n in ("setpoint", "pump")
            ),
            what="both writes recorded as done",
        )
        assert document.properties["setpoint"].reported.value == 42.5  # type: ignore[union-attr]


async def test_write_the_device_refuses_is_recorded_and_published(
    amqtt_url: str, tmp_path: Path, modbus_plc: ModbusPlcSimulator
) -> None:
    device = _plc(modbus_plc.port)
    async with _edge(amqtt_url, tmp_path / "twin.db", device) as run:
        async with collect(run.app_bus, topics.twin_errors("plc")) as errors:
            assert (await run.client.set("plc", {"ghost": 7})).ok
            await errors.wait(lambda ms: ms, "a refused write on the error topic")
        (error,) = errors.decoded(TwinError)
        assert error.code is TwinErrorCode.REFUSED
        assert "ghost" in error.properties
        write = run.twin.store.document("plc").properties["ghost"].write
        assert write is not None
        assert write.state is WriteState.FAILED
        assert write.code is TwinErrorCode.REFUSED
        assert write.reason.startswith("refused")
        assert run.twin.store.document("plc").delta() == {"ghost": 7}


async def test_write_nobody_answers_times_out_on_the_twin(amqtt_url: str, tmp_path: Path) -> None:
    device = _plc(1)  # no mapper runs for it
    async with running_twin(amqtt_url, tmp_path / "twin.db", [device], write_timeout=0.3) as run:
        async with collect(run.app_bus, topics.twin_errors("plc")) as errors:
            assert (await run.client.set("plc", {"setpoint": 20})).ok
            await errors.wait(lambda ms: ms, "a timed-out write on the error topic")
        assert errors.decoded(TwinError)[0].code is TwinErrorCode.TIMEOUT
        write = (await run.client.get("plc")).properties["setpoint"].write
        assert write is not None
        assert write.state is WriteState.FAILED
        assert write.code is TwinErrorCode.TIMEOUT
        assert "timeout" in write.reason
