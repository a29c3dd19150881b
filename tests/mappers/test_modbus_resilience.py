"""Modbus faults handled as device status, never as a crash: against a real pymodbus server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bus.mqtt import MqttClient
from bus.ports import free_port
from mappers.device import load_devices
from mappers.modbus.driver import ModbusDriver
from mappers.modbus.plan import plan_reads
from mappers.service import MapperService
from mappers.simulators.modbus_plc import ModbusPlcSimulator, RegisterKind
from schemas import topics
from schemas.readings import DeviceState, DeviceStatus, Reading
from tests.mappers.helpers import EXAMPLES, modbus_device
from tests.support import collect


def _states(statuses: list[DeviceStatus], device: str) -> list[DeviceState]:
    return [s.state for s in statuses if s.device == device]


async def test_a_refused_address_degrades_only_its_property(
    amqtt_url: str, modbus_plc: ModbusPlcSimulator
) -> None:
    # merge_gap makes one request span 1020..1030, past the simulator's 1024 registers: the
    # device refuses the merged read, and the mapper retries property by property.
    device = modbus_device(
        modbus_plc.port,
        ("good", {"offset": 1020}, {}),
        ("bad", {"offset": 1030}, {}),
        collect_cycle_ms=50,
    ).model_copy(deep=True)
    device = device.model_copy(
        update={"modbus": device.modbus.model_copy(update={"merge_gap": 20})}  # type: ignore[union-attr]
    )
    await modbus_plc.set(RegisterKind.HOLDING, 1020, [7])
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        collect(bus, topics.device_status("plc")) as statuses,
        collect(bus, topics.readings_filter("plc")) as readings,
        MapperService([device], bus=bus),
    ):
        await statuses.wait(lambda ms: ms, "a status")
        await readings.wait(lambda ms: len(ms) >= 3, "readings of the good property")
        (status, *_) = statuses.decoded(DeviceStatus)
        assert status.state is DeviceState.DEGRADED
        assert "bad" in status.reason
        assert "Modbus exception 2" in status.reason
        assert {r.property for r in readings.decoded(Reading)} == {"good"}


async def _silent_server() -> tuple[asyncio.Server, int]:
    """A TCP server that accepts Modbus requests and never answers (a hung device)."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass
        writer.close()

    port = free_port()
    server = await asyncio.start_server(swallow, "127.0.0.1", port)
    return server, port


async def test_a_device_that_does_not_answer_goes_offline_with_the_reason(amqtt_url: str) -> None:
    server, port = await _silent_server()
    async with server:
        device = modbus_device(port, ("x", {"offset": 0}, {}), collect_cycle_ms=50)
        async with (
            MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
            collect(bus, topics.device_status("plc")) as statuses,
            MapperService([device], bus=bus) as service,
        ):
            await statuses.wait(lambda ms: ms, "a status")
            (status,) = statuses.decoded(DeviceStatus)
            assert status.state is DeviceState.OFFLINE
            assert "no answer" in status.reason
            assert service.errors >= 1


async def test_one_misbehaving_device_degrades_only_itself(
    amqtt_url: str, modbus_plc: ModbusPlcSimulator
) -> None:
    good = modbus_device(
        modbus_plc.port, ("x", {"offset": 0}, {}), name="good", collect_cycle_ms=50
    )
    dead = modbus_device(free_port(), ("x", {"offset": 0}, {}), name="dead", collect_cycle_ms=50)
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        collect(bus, topics.device_status_filter()) as statuses,
        collect(bus, topics.readings_filter()) as readings,
        MapperService([dead, good], bus=bus),
    ):
        await readings.wait(lambda ms: len(ms) >= 5, "readings of the good device")
        await statuses.wait(lambda ms: len(ms) >= 2, "both statuses")
        decoded = statuses.decoded(DeviceStatus)
        assert _states(decoded, "good") == [DeviceState.ONLINE]
        assert _states(decoded, "dead")[0] is DeviceState.OFFLINE
        assert {r.device for r in readings.decoded(Reading)} == {"good"}


@pytest.fixture
async def restartable_plc() -> AsyncIterator[ModbusPlcSimulator]:
    plc = ModbusPlcSimulator(port=free_port())
    await plc.start()
    try:
        yield plc
    finally:
        await plc.stop()


async def test_a_simulator_restart_is_recovered_without_restarting_the_mapper(
    amqtt_url: str, restartable_plc: ModbusPlcSimulator
) -> None:
    plc = restartable_plc
    device = modbus_device(plc.port, ("x", {"offset": 0}, {}), collect_cycle_ms=30)
    await plc.set(RegisterKind.HOLDING, 0, [1])
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        collect(bus, topics.device_status("plc")) as statuses,
        collect(bus, topics.reading("plc", "x")) as readings,
        MapperService([device], bus=bus),
    ):
        await readings.wait(lambda ms: ms, "a first reading")
        await plc.stop()
        await statuses.wait(
            lambda ms: DeviceState.OFFLINE in _states(statuses.decoded(DeviceStatus), "plc"),
            "offline after the server stopped",
        )
        await plc.start()
        await plc.set(RegisterKind.HOLDING, 0, [2])
        await readings.wait(
            lambda ms: any(r.value == 2 for r in readings.decoded(Reading)), "readings again"
        )
        assert _states(statuses.decoded(DeviceStatus), "plc")[-1] is DeviceState.ONLINE


def test_adjacent_properties_merge_into_requests_within_protocol_limits() -> None:
    regs = modbus_device(1, *((f"r{i}", {"offset": i}, {}) for i in range(130)))
    assert [(r.start, r.count) for r in plan_reads(regs.properties)] == [(0, 125), (125, 5)]
    assert len(plan_reads(regs.properties, merge=False)) == 130
    coils = modbus_device(
        1, *((f"c{i}", {"register": "CoilRegister", "offset": i}, {}) for i in range(2001))
    )
    assert [(r.start, r.count) for r in plan_reads(coils.properties)] == [(0, 2000), (2000, 1)]
    mixed = modbus_device(
        1,
        ("a", {"offset": 0, "dataType": "float64"}, {}),
        ("b", {"offset": 4}, {}),
        ("c", {"offset": 6}, {}),  # a hole at 5: a separate request unless merge_gap >= 1
        ("d", {"offset": 0, "register": "InputRegister"}, {}),
    )
    assert len(plan_reads(mixed.properties)) == 3
    assert len(plan_reads(mixed.properties, gap=1)) == 2


async def test_merged_reads_send_one_request_for_adjacent_registers(
    modbus_plc: ModbusPlcSimulator,
) -> None:
    device = modbus_device(modbus_plc.port, *((f"r{i}", {"offset": i}, {}) for i in range(10)))
    await modbus_plc.set(RegisterKind.HOLDING, 0, list(range(10)))
    driver = ModbusDriver(device)
    await driver.connect()
    try:
        values = await driver.read(device.properties)
    finally:
        await driver.close()
    assert values == {f"r{i}": i for i in range(10)}
    assert driver.requests == 1


async def test_the_kubeedge_example_reads_from_a_real_device(
    amqtt_url: str, modbus_plc: ModbusPlcSimulator
) -> None:
    (device,) = load_devices(EXAMPLES / "kubeedge-plc.yaml")
    assert device.modbus is not None
    device = device.model_copy(
        update={"modbus": device.modbus.model_copy(update={"port": modbus_plc.port})}
    )
    await modbus_plc.set(RegisterKind.HOLDING, 0, [215])
    await modbus_plc.set(RegisterKind.HOLDING, 12, [0x2345, 0x0001])  # low word first
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        collect(bus, topics.readings_filter("plc-2")) as readings,
        MapperService([device], bus=bus),
    ):
        await readings.wait(lambda ms: len(ms) >= 3, "readings of every property")
        got = {r.property: r.value for r in readings.decoded(Reading)}
        assert got["temperature"] == pytest.approx(21.5)
        assert got["energy"] == 0x00012345
