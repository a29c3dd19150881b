"""Runs one mapper per configured device on one bus connection."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from bus.mqtt import MqttClient
from mappers.device import DeviceInstance
from mappers.modbus.mapper import ModbusMapper


class MapperService:
    """All device mappers of an edge (or of a standalone `edgefabric mapper` process)."""

    def __init__(self, devices: Sequence[DeviceInstance], *, bus: MqttClient) -> None:
        self.mappers = [ModbusMapper(device, bus=bus) for device in devices]
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def readings(self) -> int:
        """Readings published since start, over all devices."""
        return sum(m.readings for m in self.mappers)

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            for mapper in self.mappers:
                await stack.enter_async_context(mapper)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
