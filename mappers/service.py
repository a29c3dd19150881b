"""Runs one mapper per configured device on one bus connection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

from bus.lifecycle import ContextGroup
from bus.mqtt import MqttClient
from mappers.device import DeviceInstance, Protocol
from mappers.driver import Driver
from mappers.runner import DeviceMapper


def make_driver(device: DeviceInstance) -> Driver:
    """The protocol driver for `device`.

    Imports stay lazy: a Modbus-only edge never loads asyncua or bleak.
    """
    match device.protocol:
        case Protocol.MODBUS:
            from mappers.modbus.driver import ModbusDriver  # noqa: PLC0415

            return ModbusDriver(device)
        case Protocol.OPCUA:
            from mappers.opcua.driver import OpcUaDriver  # noqa: PLC0415 - lazy: asyncua is heavy

            return OpcUaDriver(device)
        case _:
            from mappers.errors import DeviceConfigError  # noqa: PLC0415

            raise DeviceConfigError(f"{device.name}: no {device.protocol.value} mapper yet")


class MapperService:
    """All device mappers of an edge (or of a standalone `edgefabric mapper` process).

    Each device runs in its own `DeviceMapper`; one device failing (offline, refusing
    requests) never stops the others. `drivers` replaces the driver of named devices (the
    BLE fake transport in tests, instrumented drivers in the bench).
    """

    def __init__(
        self,
        devices: Sequence[DeviceInstance],
        *,
        bus: MqttClient,
        drivers: Mapping[str, Driver] | None = None,
    ) -> None:
        names = [d.name for d in devices]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            from mappers.errors import DeviceConfigError  # noqa: PLC0415

            raise DeviceConfigError(f"device names must be unique: {', '.join(duplicates)}")
        given = drivers or {}
        self.mappers = [
            DeviceMapper(d, given.get(d.name) or make_driver(d), bus=bus) for d in devices
        ]
        self._parts = ContextGroup(self.mappers)

    @property
    def readings(self) -> int:
        """Readings published since start, over all devices."""
        return sum(m.readings for m in self.mappers)

    @property
    def errors(self) -> int:
        """Errors counted since start, over all devices."""
        return sum(m.errors for m in self.mappers)

    def mapper(self, device: str) -> DeviceMapper:
        """The mapper of one device (KeyError if unknown)."""
        for m in self.mappers:
            if m.device.name == device:
                return m
        raise KeyError(device)

    async def __aenter__(self) -> Self:
        await self._parts.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._parts.__aexit__(exc_type, exc, tb)
