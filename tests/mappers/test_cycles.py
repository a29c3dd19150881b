"""Behaviour every mapper shares: collect vs report cycles, status and counters."""

from __future__ import annotations

from bus.mqtt import MqttClient
from mappers.service import MapperService
from mappers.simulators.modbus_plc import ModbusPlcSimulator, RegisterKind
from schemas import topics
from schemas.readings import DeviceState, DeviceStatus, Reading
from tests.mappers.helpers import modbus_device
from tests.support import collect, wait_for


async def test_a_report_cycle_publishes_the_latest_value_less_often_than_it_is_collected(
    amqtt_url: str, modbus_plc: ModbusPlcSimulator
) -> None:
    device = modbus_device(
        modbus_plc.port, ("x", {"offset": 0}, {}), collect_cycle_ms=10, report_cycle_ms=400
    )
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        collect(bus, topics.reading("plc", "x")) as readings,
        MapperService([device], bus=bus) as service,
    ):
        mapper = service.mapper("plc")
        await readings.wait(lambda ms: ms, "the first value at once")
        await modbus_plc.set(RegisterKind.HOLDING, 0, [9])
        await readings.wait(
            lambda ms: 9 in [r.value for r in readings.decoded(Reading)], "the latest value"
        )
        collected = mapper.driver.requests
        assert collected >= 10
        assert len(readings.messages) < collected / 2


async def test_status_is_retained_and_carries_the_error_count(
    amqtt_url: str, modbus_plc: ModbusPlcSimulator
) -> None:
    device = modbus_device(
        modbus_plc.port,
        ("ok", {"offset": 0}, {}),
        ("bad", {"offset": 1500}, {}),
        collect_cycle_ms=20,
    )
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        MapperService([device], bus=bus) as service,
    ):
        await wait_for(lambda: service.errors >= 3, what="errors counted")
    async with (
        MqttClient(amqtt_url, client_id="late", protocol="3.1.1") as late,
        collect(late, topics.device_status("plc")) as statuses,
    ):
        await statuses.wait(lambda ms: ms, "the retained status for a late subscriber")
        (status,) = statuses.decoded(DeviceStatus)
        assert status.state is DeviceState.DEGRADED
        assert status.errors >= 1
        assert statuses.messages[0].retain
