"""The Modbus driver: TCP or RTU via pymodbus, merged reads, writes of any width."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from mappers.device import DeviceInstance, PropertySpec
from mappers.driver import ReadResult
from mappers.errors import (
    DeviceTimeout,
    DeviceUnavailable,
    MapperError,
    ModbusExceptionResponse,
    PropertyReadOnly,
)
from mappers.modbus.codec import decode_bits, decode_registers, encode_bits, encode_registers
from mappers.modbus.plan import ReadRequest, plan_reads
from mappers.modbus.visitor import ModbusConnection, ModbusVisitor, RegisterType


def _visitor(prop: PropertySpec) -> ModbusVisitor:
    if prop.modbus is None:  # pragma: no cover - DeviceInstance validation guarantees it
        raise ValueError(f"property {prop.name!r} has no modbus visitor")
    return prop.modbus


class ModbusDriver:
    """One Modbus device (one slave id on one TCP connection or serial line).

    pymodbus's own reconnect is disabled (`reconnect_delay=0`): the runner owns reconnects so
    back-off and device status stay in one place.
    """

    def __init__(self, device: DeviceInstance) -> None:
        if device.modbus is None:
            raise ValueError(f"device {device.name!r} has no modbus connection")
        self.connection: ModbusConnection = device.modbus
        self.requests = 0
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._plans: dict[tuple[str, ...], list[ReadRequest]] = {}

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        conn = self.connection
        if conn.is_rtu:
            return AsyncModbusSerialClient(
                conn.serial_port or "",
                baudrate=conn.baudrate,
                bytesize=conn.bytesize,
                parity=conn.parity,
                stopbits=conn.stopbits,
                timeout=conn.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        return AsyncModbusTcpClient(
            conn.host, port=conn.port, timeout=conn.timeout_s, retries=0, reconnect_delay=0
        )

    @property
    def connected(self) -> bool:
        """True while pymodbus holds an open transport."""
        return self._client is not None and bool(self._client.connected)

    async def connect(self) -> None:
        """Open the TCP connection or serial port."""
        await self.close()
        client = self._new_client()
        try:
            async with asyncio.timeout(self.connection.timeout_s * 2):
                ok = await client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            client.close()
            raise DeviceUnavailable(f"connect failed: {exc or type(exc).__name__}") from exc
        if not ok:
            client.close()
            where = self.connection.serial_port or f"{self.connection.host}:{self.connection.port}"
            raise DeviceUnavailable(f"connect to {where} failed")
        self._client = client

    async def close(self) -> None:
        """Close the transport; safe twice."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def watch(self, props: Sequence[PropertySpec]) -> bool:
        """Modbus has no push: the runner polls."""
        return False

    async def next_change(self, timeout: float) -> tuple[PropertySpec, object] | None:
        """Never called: `watch` returned False."""
        raise NotImplementedError

    async def _call(self, request: Awaitable[Any]) -> Any:
        """Send one request with a call-site timeout and translate pymodbus errors."""
        self.requests += 1
        try:
            async with asyncio.timeout(self.connection.timeout_s + 0.5):
                response = await request
        except (TimeoutError, ModbusIOException) as exc:
            raise DeviceTimeout(f"no answer within {self.connection.timeout_s} s") from exc
        except (ConnectionException, OSError) as exc:
            raise DeviceUnavailable(f"connection lost: {exc}") from exc
        except ModbusException as exc:
            raise DeviceUnavailable(str(exc)) from exc
        if response.isError():
            raise ModbusExceptionResponse(
                response.function_code, getattr(response, "exception_code", 0)
            )
        return response

    def _require_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is None or not self._client.connected:
            raise DeviceUnavailable("not connected")
        return self._client

    async def _fetch(self, request: ReadRequest) -> list[int] | list[bool]:
        client = self._require_client()
        slave = self.connection.slave_id
        readers = {
            RegisterType.COIL: client.read_coils,
            RegisterType.DISCRETE_INPUT: client.read_discrete_inputs,
            RegisterType.HOLDING: client.read_holding_registers,
            RegisterType.INPUT: client.read_input_registers,
        }
        reader = readers[request.kind]
        response = await self._call(reader(request.start, count=request.count, device_id=slave))
        if request.kind.is_bits:
            return list(response.bits[: request.count])
        return list(response.registers)

    async def read(self, props: Sequence[PropertySpec]) -> ReadResult:
        """Read `props` with merged requests.

        A merged request refused by the device (e.g. exception 2, one address unmapped) is
        retried property by property, so only the offending property reports an error.
        """
        key = tuple(p.name for p in props)
        plan = self._plans.get(key)
        if plan is None:
            conn = self.connection
            plan = plan_reads(props, merge=conn.merge_reads, gap=conn.merge_gap)
            self._plans[key] = plan
        result: ReadResult = {}
        for request in plan:
            await self._serve(request, result)
        return result

    async def _serve(self, request: ReadRequest, result: ReadResult) -> None:
        try:
            values = await self._fetch(request)
        except ModbusExceptionResponse as exc:
            if len(request.props) == 1:
                result[request.props[0].name] = exc
                return
            for prop in request.props:
                v = _visitor(prop)
                await self._serve(ReadRequest(request.kind, v.offset, v.count, (prop,)), result)
            return
        for prop in request.props:
            v = _visitor(prop)
            chunk = values[v.offset - request.start : v.offset - request.start + v.count]
            try:
                if request.kind.is_bits:
                    result[prop.name] = decode_bits(v, [bool(b) for b in chunk])
                else:
                    result[prop.name] = decode_registers(v, [int(r) for r in chunk])
            except (ValueError, MapperError) as exc:
                result[prop.name] = MapperError(f"cannot decode: {exc}")

    async def write(self, prop: PropertySpec, value: object) -> None:
        """Write one property: function code 5/15 for coils, 6/16 for holding registers."""
        v = _visitor(prop)
        if not v.register_type.is_writable:
            raise PropertyReadOnly(f"{v.register_type.value} cannot be written")
        client = self._require_client()
        slave = self.connection.slave_id
        if v.register_type is RegisterType.COIL:
            bits = encode_bits(v, value)
            if len(bits) == 1:
                await self._call(client.write_coil(v.offset, bits[0], device_id=slave))
            else:
                await self._call(client.write_coils(v.offset, bits, device_id=slave))
            return
        registers = encode_registers(v, value)
        if len(registers) == 1:
            await self._call(client.write_register(v.offset, registers[0], device_id=slave))
        else:
            await self._call(client.write_registers(v.offset, registers, device_id=slave))
