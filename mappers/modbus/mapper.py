"""Polls a Modbus TCP device and publishes its properties as readings."""

from __future__ import annotations

import asyncio
import logging
import struct
from types import TracebackType
from typing import Self

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from mappers.device import DeviceInstance, PropertySpec, RegisterType
from mappers.errors import DeviceUnavailable, ModbusExceptionResponse
from schemas import topics
from schemas.codec import encode
from schemas.readings import DeviceState, DeviceStatus, Reading

log = logging.getLogger(__name__)


def registers_to_value(registers: list[int], *, signed: bool, scale: float) -> float:
    """Join big-endian 16-bit registers into an integer and apply the scale."""
    raw = b"".join(struct.pack(">H", r & 0xFFFF) for r in registers)
    return int.from_bytes(raw, "big", signed=signed) * scale


class ModbusMapper:
    """One device's poll loop, as an async context manager.

    A device that does not answer is reported offline with the reason and retried with
    back-off; it never takes the mapper (or other devices) down.
    """

    def __init__(self, device: DeviceInstance, *, bus: MqttClient) -> None:
        self.device = device
        self._bus = bus
        self._client = AsyncModbusTcpClient(
            device.modbus.host,
            port=device.modbus.port,
            timeout=device.modbus.timeout_s,
            retries=0,
        )
        self._tasks = ServiceTasks(f"mappers.modbus[{device.name}]")
        self._state: DeviceState | None = None
        self.readings = 0
        self.errors = 0

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        self._tasks.spawn(self._poll(), "poll")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            self._client.close()

    async def _read(self, prop: PropertySpec) -> float:
        visitor = prop.modbus
        slave = self.device.modbus.slave_id
        try:
            if visitor.register_type is RegisterType.HOLDING:
                response = await self._client.read_holding_registers(
                    visitor.offset, count=visitor.limit, device_id=slave
                )
            elif visitor.register_type is RegisterType.INPUT:
                response = await self._client.read_input_registers(
                    visitor.offset, count=visitor.limit, device_id=slave
                )
            else:  # pragma: no cover - the skeleton config admits registers only
                raise DeviceUnavailable(f"{visitor.register_type} not supported yet")
        except ModbusException as exc:
            raise DeviceUnavailable(str(exc)) from exc
        if response.isError():
            raise ModbusExceptionResponse(
                response.function_code, getattr(response, "exception_code", 0)
            )
        return registers_to_value(response.registers, signed=visitor.signed, scale=visitor.scale)

    async def _set_state(self, state: DeviceState, reason: str = "") -> None:
        if state is self._state:
            return
        self._state = state
        status = DeviceStatus(device=self.device.name, state=state, reason=reason,
                              errors=self.errors)
        await self._bus.publish(topics.device_status(self.device.name), encode(status),
                                retain=True)

    async def _poll(self) -> None:
        cycle = self.device.collect_cycle_ms / 1000
        backoff = 0.1
        while True:
            if not self._client.connected and not await self._client.connect():
                self.errors += 1
                await self._set_state(DeviceState.OFFLINE, "connect failed")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            started = asyncio.get_running_loop().time()
            for prop in self.device.properties:
                try:
                    value = await self._read(prop)
                except (DeviceUnavailable, ModbusExceptionResponse) as exc:
                    self.errors += 1
                    await self._set_state(DeviceState.DEGRADED, f"{prop.name}: {exc}")
                    continue
                reading = Reading(device=self.device.name, property=prop.name, value=value,
                                  unit=prop.unit)
                await self._bus.publish(topics.reading(self.device.name, prop.name),
                                        encode(reading))
                self.readings += 1
                await self._set_state(DeviceState.ONLINE)
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, cycle - elapsed))
