"""The Bluetooth LE mapper against a fake peripheral at the transport boundary.

Everything above `BleTransport` is real: converter, notifications, writes, reconnects, status,
the bus.
"""

from __future__ import annotations

from typing import Any

import pytest

from bus.mqtt import MqttClient
from mappers.ble import converter
from mappers.ble.driver import BleDriver
from mappers.ble.visitor import DataConverter
from mappers.device import DeviceInstance
from mappers.errors import ValueOutOfRange
from mappers.service import MapperService
from mappers.simulators.ble_sensor import CONFIG_UUID, TEMPERATURE_UUID, FakePeripheral
from schemas import topics
from schemas.codec import encode
from schemas.readings import (
    DeviceState,
    DeviceStatus,
    DeviceWrite,
    DeviceWriteResult,
    Reading,
    WriteErrorCode,
)
from tests.support import collect

DIVIDE_128 = [{"operationType": "Divide", "operationValue": 128}]


def _conv(**kw: Any) -> DataConverter:
    return DataConverter.model_validate(kw)


def test_converter_joins_bytes_in_real_byte_order_not_as_decimal_strings() -> None:
    data = bytes([0x01, 0x02, 0xFF, 0xFE])
    # KubeEdge would join 0x01 0x02 as the string "12"; the real value is 0x0102 = 258.
    assert converter.decode(_conv(startIndex=0, endIndex=1), data) == 258
    assert converter.decode(_conv(startIndex=0, endIndex=1, byteOrder="little"), data) == 513
    assert converter.decode(_conv(startIndex=2, endIndex=3, signed=True), data) == -2
    assert converter.decode(_conv(startIndex=1, endIndex=1, shiftLeft=4), data) == 0x20
    assert converter.decode(_conv(startIndex=0, endIndex=1, shiftRight=2), data) == 258 >> 2
    ops = [
        {"operationType": "Multiply", "operationValue": 3},
        {"operationType": "Add", "operationValue": 1},
        {"operationType": "Subtract", "operationValue": 4},
        {"operationType": "Divide", "operationValue": 2},
    ]
    assert converter.decode(_conv(startIndex=1, endIndex=1, orderOfOperations=ops), data) == 1.5


def test_converter_inverse_round_trips_and_keeps_bytes_outside_the_span() -> None:
    conv = _conv(
        startIndex=1, endIndex=2, byteOrder="little", signed=True, orderOfOperations=DIVIDE_128
    )
    current = bytes([0xAA, 0, 0, 0xBB])
    written = converter.encode(conv, -12.5, current)
    assert written[0] == 0xAA
    assert written[3] == 0xBB
    assert converter.decode(conv, written) == -12.5
    with pytest.raises(ValueOutOfRange):
        converter.encode(_conv(startIndex=0, endIndex=0), 300, b"\x00")


def sensor_device(**visitor: Any) -> DeviceInstance:
    return DeviceInstance.model_validate(
        {
            "name": "tag",
            "protocol": "bluetooth",
            "bluetooth": {
                "macAddress": "AA:BB:CC:DD:EE:FF",
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.2,
                "timeout_s": 1,
            },
            "collect_cycle_ms": 50,
            "properties": [
                {
                    "name": "ambient",
                    "type": "double",
                    "bluetooth": {
                        "characteristicUUID": TEMPERATURE_UUID,
                        "dataConverter": {
                            "startIndex": 2,
                            "endIndex": 3,
                            "byteOrder": "little",
                            "signed": True,
                            "orderOfOperations": DIVIDE_128,
                        },
                        **visitor,
                    },
                },
                {
                    "name": "config",
                    "type": "int",
                    "accessMode": "ReadWrite",
                    "bluetooth": {"characteristicUUID": CONFIG_UUID, **visitor},
                },
            ],
        }
    )


async def test_notifications_become_readings_and_a_dropped_link_reconnects(
    amqtt_url: str,
) -> None:
    peripheral = FakePeripheral()
    device = sensor_device()
    driver = BleDriver(device, transport=peripheral.transport())
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        collect(bus, topics.reading("tag", "ambient")) as readings,
        collect(bus, topics.device_status("tag")) as statuses,
        MapperService([device], bus=bus, drivers={"tag": driver}) as service,
    ):
        await service.mapper("tag")._watching.wait()
        peripheral.notify(
            TEMPERATURE_UUID, bytes([0, 0]) + (-640).to_bytes(2, "little", signed=True)
        )
        await readings.wait(
            lambda ms: -5.0 in [r.value for r in readings.decoded(Reading)], "notified value"
        )
        peripheral.refuse_connections = True
        peripheral.drop()
        await statuses.wait(
            lambda ms: DeviceState.OFFLINE in [s.state for s in statuses.decoded(DeviceStatus)],
            "offline after the drop",
        )
        peripheral.refuse_connections = False
        await statuses.wait(
            lambda ms: (
                statuses.decoded(DeviceStatus)[-1].state is DeviceState.ONLINE
                and peripheral.connects >= 2
            ),
            "reconnected",
        )
        await service.mapper("tag")._watching.wait()
        peripheral.notify(TEMPERATURE_UUID, bytes([0, 0]) + (1280).to_bytes(2, "little"))
        await readings.wait(
            lambda ms: 10.0 in [r.value for r in readings.decoded(Reading)], "after reconnect"
        )


async def test_polling_reads_and_writes_go_through_the_converter(amqtt_url: str) -> None:
    peripheral = FakePeripheral()
    device = sensor_device(notify=False)
    driver = BleDriver(device, transport=peripheral.transport())
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        collect(bus, topics.readings_filter("tag")) as readings,
        collect(bus, topics.device_write_result("tag")) as results,
        MapperService([device], bus=bus, drivers={"tag": driver}),
    ):
        await readings.wait(lambda ms: len(ms) >= 2, "polled readings")
        assert {r.property: r.value for r in readings.decoded(Reading)}["ambient"] == 3008 / 128
        write = DeviceWrite(device="tag", values={"config": 1, "ambient": 3})
        await bus.publish(topics.device_write("tag"), encode(write))
        await results.wait(lambda ms: ms, "write result")
        (result,) = results.decoded(DeviceWriteResult)
        assert result.written == {"config": 1}
        assert result.error_code("ambient") is WriteErrorCode.READ_ONLY
        assert peripheral.values[CONFIG_UUID] == b"\x01"
