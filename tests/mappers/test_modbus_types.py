"""Every Modbus data type and swap combination, read and written against a real pymodbus server."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from bus.mqtt import MqttClient
from mappers.device import DeviceInstance
from mappers.service import MapperService
from mappers.simulators.modbus_plc import ModbusPlcSimulator, RegisterKind
from schemas import topics
from schemas.codec import encode
from schemas.readings import DeviceWrite, DeviceWriteResult, Reading
from tests.mappers.helpers import modbus_device
from tests.support import collect

# (data type, struct format or None, value); strings and booleans are handled by hand.
CASES: list[tuple[str, str | None, Any]] = [
    ("int16", ">h", -1234),
    ("uint16", ">H", 54321),
    ("int32", ">i", -123_456_789),
    ("uint32", ">I", 3_000_000_000),
    ("int64", ">q", -9_000_000_000_000),
    ("uint64", ">Q", 18_000_000_000_000_000_000),
    ("float32", ">f", 1.5),
    ("float64", ">d", -2.25e10),
    ("boolean", None, True),
    ("string", None, "hello!"),
]
SWAPS = [(False, False), (True, False), (False, True), (True, True)]


def spec_registers(fmt: str | None, value: Any, *, is_swap: bool, word_swap: bool) -> list[int]:
    """The wire registers, written out from the Modbus spec independently of the codec."""
    if fmt is None and isinstance(value, bool):
        raw = b"\x00\x01" if value else b"\x00\x00"
    elif fmt is None:
        raw = str(value).encode().ljust(6, b"\x00")
    else:
        raw = struct.pack(fmt, value)
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if word_swap:
        words.reverse()
    if is_swap:
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def _layout() -> list[tuple[str, int, dict[str, Any], Any, list[int]]]:
    out = []
    for s, (is_swap, word_swap) in enumerate(SWAPS):
        for t, (kind, fmt, value) in enumerate(CASES):
            offset = (s * len(CASES) + t) * 4
            visitor = {
                "offset": offset,
                "dataType": kind,
                "isSwap": is_swap,
                "isRegisterSwap": word_swap,
            }
            if kind == "string":
                visitor["limit"] = 3
            name = f"{kind}-s{int(is_swap)}-w{int(word_swap)}"
            regs = spec_registers(fmt, value, is_swap=is_swap, word_swap=word_swap)
            out.append((name, offset, visitor, value, regs))
    return out


LAYOUT = _layout()


def _device(port: int, cycle_ms: int) -> DeviceInstance:
    props = [(name, visitor, {"accessMode": "ReadWrite"}) for name, _, visitor, _, _ in LAYOUT]
    props.append(("scaled", {"offset": 500, "scale": 0.5, "valueOffset": -10}, {}))
    return modbus_device(port, *props, collect_cycle_ms=cycle_ms)


async def test_every_data_type_and_swap_combination_reads_correctly(
    amqtt_url: str, modbus_plc: ModbusPlcSimulator
) -> None:
    for _, offset, _, _, regs in LAYOUT:
        await modbus_plc.set(RegisterKind.HOLDING, offset, regs)
    await modbus_plc.set(RegisterKind.HOLDING, 500, [100])
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        collect(bus, topics.readings_filter("plc")) as readings,
        MapperService([_device(modbus_plc.port, 100)], bus=bus),
    ):
        await readings.wait(lambda ms: len(ms) >= len(LAYOUT) + 1, "one reading per property")
        got = {r.property: r.value for r in readings.decoded(Reading)}
        for name, _, _, value, _ in LAYOUT:
            assert got[name] == pytest.approx(value), name
        assert got["scaled"] == 40.0


async def test_every_data_type_and_swap_combination_writes_the_spec_registers(
    amqtt_url: str, modbus_plc: ModbusPlcSimulator
) -> None:
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        MapperService([_device(modbus_plc.port, 60_000)], bus=bus),
        collect(bus, topics.device_write_result("plc")) as results,
    ):
        values = {name: value for name, _, _, value, _ in LAYOUT}
        await bus.publish(
            topics.device_write("plc"), encode(DeviceWrite(device="plc", values=values))
        )
        await results.wait(lambda ms: ms, "write result")
        (result,) = results.decoded(DeviceWriteResult)
        assert result.ok, result.errors
        for name, offset, _, value, regs in LAYOUT:
            assert await modbus_plc.get(RegisterKind.HOLDING, offset, len(regs)) == regs, name
            assert result.written[name] == pytest.approx(value), name
