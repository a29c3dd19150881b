"""The mapper's write topic fuzzed through a real broker against a real Modbus device.

A payload that is not a `DeviceWrite` for the device ends as one dead letter on
``ef/dead-letter/mappers``; a well-formed write of a hostile value is refused per property in
the `DeviceWriteResult` (docs/mappers.md, "The write path") and never reaches a register.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bus.mqtt import MqttClient
from mappers.device import DeviceInstance
from mappers.service import MapperService
from mappers.simulators.modbus_plc import ModbusPlcSimulator, RegisterKind
from schemas import topics
from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.readings import DeviceWrite, DeviceWriteResult, WriteErrorCode
from tests.mappers.helpers import modbus_device
from tests.security.fuzz import Observer, fuzz_topic, hostile_payloads, observing
from tests.support import collect

DEVICE = "plc"
RW = {"accessMode": "ReadWrite"}
SMALL = 50  # int16 holding register
TOTAL = 30  # int64 holding register, four words


def _device(port: int) -> DeviceInstance:
    return modbus_device(
        port,
        ("small", {"offset": SMALL, "dataType": "int16"}, RW),
        ("total", {"offset": TOTAL, "dataType": "int64"}, {**RW, "type": "int"}),
        ("setpoint", {"offset": 10, "scale": 0.1}, {**RW, "type": "double", "max": 300}),
        ("temperature", {"offset": 0, "scale": 0.1}, {}),
        ("counter", {"register": "InputRegister", "offset": 3}, RW),
        name=DEVICE,
        collect_cycle_ms=60_000,
    )


def _is_write_for_device(payload: bytes) -> bool:
    try:
        return decode(DeviceWrite, payload).device == DEVICE
    except SchemaError:
        return False


@pytest.fixture
async def observed(mosquitto_url: str) -> AsyncIterator[tuple[MqttClient, Observer]]:
    async with observing(mosquitto_url) as pair:
        yield pair


async def _write(bus: MqttClient, values: dict[str, Any], correlation_id: str) -> DeviceWriteResult:
    """Send a write whose body is built by `json` (NaN, Infinity and huge ints included)."""
    body = json.loads(encode(DeviceWrite(device=DEVICE, values={}, correlation_id=correlation_id)))
    body["values"] = values
    async with collect(bus, topics.device_write_result(DEVICE)) as replies:
        await bus.publish(topics.device_write(DEVICE), json.dumps(body).encode())
        await replies.wait(
            lambda _: any(
                r.correlation_id == correlation_id for r in replies.decoded(DeviceWriteResult)
            ),
            f"the result of {correlation_id}",
        )
    return next(r for r in replies.decoded(DeviceWriteResult) if r.correlation_id == correlation_id)


async def test_mapper_survives_hostile_write_payloads_and_still_writes(
    mosquitto_url: str, observed: tuple[MqttClient, Observer], modbus_plc: ModbusPlcSimulator
) -> None:
    bus, observer = observed
    valid = DeviceWrite(device=DEVICE, values={"small": 7}, correlation_id="ok")
    async with (
        MqttClient(mosquitto_url, client_id="mapper") as mapper_bus,
        MapperService([_device(modbus_plc.port)], bus=mapper_bus),
    ):
        payloads = hostile_payloads(json.loads(encode(valid)), _is_write_for_device)
        payloads.append(encode(DeviceWrite(device="plc-2", values={"small": 1})))  # not ours
        await fuzz_topic(
            bus=bus,
            observer=observer,
            service="mappers",
            topic=topics.device_write(DEVICE),
            payloads=payloads,
        )
        assert await modbus_plc.get(RegisterKind.HOLDING, SMALL, 1) == [0]
        result = await _write(bus, {"small": 7}, "after")
        assert result.ok, result.errors
        assert result.written == {"small": 7}
        assert await modbus_plc.get(RegisterKind.HOLDING, SMALL, 1) == [7]


HOSTILE_VALUES: list[tuple[str, object, WriteErrorCode]] = [
    ("nope", 1, WriteErrorCode.UNKNOWN_PROPERTY),
    ("temperature", 20, WriteErrorCode.READ_ONLY),
    ("counter", 1, WriteErrorCode.READ_ONLY),
    ("small", 1e30, WriteErrorCode.OUT_OF_RANGE),
    ("small", 40_000, WriteErrorCode.OUT_OF_RANGE),
    ("small", -32_769, WriteErrorCode.OUT_OF_RANGE),
    ("small", 10**400, WriteErrorCode.OUT_OF_RANGE),
    ("small", math.nan, WriteErrorCode.OUT_OF_RANGE),
    ("small", math.inf, WriteErrorCode.OUT_OF_RANGE),
    ("small", -math.inf, WriteErrorCode.OUT_OF_RANGE),
    ("small", 1.5, WriteErrorCode.INVALID_VALUE),
    ("small", True, WriteErrorCode.INVALID_VALUE),
    ("small", "12", WriteErrorCode.INVALID_VALUE),
    ("small", [1, 2], WriteErrorCode.INVALID_VALUE),
    ("small", {"a": 1}, WriteErrorCode.INVALID_VALUE),
    ("small", None, WriteErrorCode.INVALID_VALUE),
    ("total", 2**64, WriteErrorCode.OUT_OF_RANGE),
    ("total", 0.5, WriteErrorCode.INVALID_VALUE),
    ("setpoint", math.nan, WriteErrorCode.OUT_OF_RANGE),
    ("setpoint", 10**400, WriteErrorCode.OUT_OF_RANGE),
    ("setpoint", 301, WriteErrorCode.OUT_OF_RANGE),
    ("setpoint", "abc", WriteErrorCode.INVALID_VALUE),
]


async def test_mapper_refuses_hostile_values_per_property_and_writes_nothing(
    mosquitto_url: str, observed: tuple[MqttClient, Observer], modbus_plc: ModbusPlcSimulator
) -> None:
    bus, observer = observed
    async with (
        MqttClient(mosquitto_url, client_id="mapper") as mapper_bus,
        MapperService([_device(modbus_plc.port)], bus=mapper_bus),
    ):
        before = await modbus_plc.get(RegisterKind.HOLDING, 0, 60)
        for n, (prop, value, code) in enumerate(HOSTILE_VALUES):
            result = await _write(bus, {prop: value}, f"h{n}")
            assert result.error_code(prop) is code, (prop, value, result.errors)
            assert result.errors[prop].startswith(f"{code.value}: ")
            assert len(result.errors[prop]) > len(code.value) + 2  # the reason names the detail
            assert result.written == {}
        assert await modbus_plc.get(RegisterKind.HOLDING, 0, 60) == before  # nothing written
        assert observer.letters("mappers") == []  # refused in the result, not dead-lettered
        # An int64 beyond 2**53 is written exactly, not as its float neighbour.
        exact = await _write(bus, {"total": 2**53 + 1}, "exact")
        assert exact.written == {"total": 2**53 + 1}, exact.errors
