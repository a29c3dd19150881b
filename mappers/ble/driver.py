"""The Bluetooth LE driver: characteristics through a `BleTransport`, converted as configured."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from mappers.ble import converter
from mappers.ble.transport import BleakTransport, BleTransport
from mappers.ble.visitor import BleVisitor
from mappers.device import DeviceInstance, PropertySpec, PropertyType
from mappers.driver import ReadResult
from mappers.errors import DeviceTimeout, DeviceUnavailable, InvalidValue, MapperError

T = TypeVar("T")

CHANGE_QUEUE = 10_000
"""Pending notifications; when full the oldest is dropped (a newer value supersedes it)."""


def _visitor(prop: PropertySpec) -> BleVisitor:
    if prop.bluetooth is None:  # pragma: no cover - validated by DeviceInstance
        raise ValueError(f"property {prop.name!r} has no bluetooth visitor")
    return prop.bluetooth


def _decode(prop: PropertySpec, data: bytes) -> object:
    if prop.type is PropertyType.STRING:
        return data.rstrip(b"\x00").decode("utf-8", errors="replace")
    if prop.type is PropertyType.BYTES:
        return data
    return converter.decode(_visitor(prop).data_converter, data)


class BleDriver:
    """One peripheral. Notifications are used when every property is notify-capable."""

    def __init__(self, device: DeviceInstance, *, transport: BleTransport | None = None) -> None:
        if device.bluetooth is None:
            raise ValueError(f"device {device.name!r} has no bluetooth connection")
        self.connection = device.bluetooth
        self.transport: BleTransport = transport or BleakTransport(device.bluetooth)
        self.requests = 0
        self._lost = False
        self._changes: asyncio.Queue[tuple[PropertySpec, object]] = asyncio.Queue(CHANGE_QUEUE)

    @property
    def connected(self) -> bool:
        """True while the transport's link is up."""
        return self.transport.is_connected and not self._lost

    def _on_disconnect(self) -> None:
        self._lost = True

    async def connect(self) -> None:
        """Find and connect to the peripheral."""
        self._lost = False
        try:
            async with asyncio.timeout(self.connection.timeout_s):
                await self.transport.connect(self._on_disconnect)
        except TimeoutError as exc:
            raise DeviceTimeout(f"connect took longer than {self.connection.timeout_s} s") from exc

    async def close(self) -> None:
        """Disconnect; safe twice."""
        await self.transport.disconnect()

    async def _io(self, coro: Awaitable[T]) -> T:
        self.requests += 1
        try:
            async with asyncio.timeout(self.connection.timeout_s):
                return await coro
        except TimeoutError as exc:
            raise DeviceTimeout(f"no answer within {self.connection.timeout_s} s") from exc

    async def read(self, props: Sequence[PropertySpec]) -> ReadResult:
        """Read each characteristic; a refused or undecodable one fails alone."""
        result: ReadResult = {}
        for prop in props:
            try:
                data = await self._io(self.transport.read(_visitor(prop).characteristic_uuid))
                result[prop.name] = _decode(prop, data)
            except DeviceUnavailable:
                raise
            except MapperError as exc:
                result[prop.name] = exc
        return result

    async def write(self, prop: PropertySpec, value: object) -> None:
        """Write through the inverse converter (read-modify-write outside the byte span)."""
        uuid = _visitor(prop).characteristic_uuid
        if prop.type is PropertyType.STRING:
            data = str(value).encode()
        elif prop.type is PropertyType.BYTES:
            data = bytes.fromhex(str(value))
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidValue(f"{value!r} is not a number")
            current = await self._io(self.transport.read(uuid))
            data = converter.encode(_visitor(prop).data_converter, value, current)
        await self._io(self.transport.write(uuid, data))

    async def watch(self, props: Sequence[PropertySpec]) -> bool:
        """Start notifications when every property has `notify`; else the runner polls."""
        if not props or not all(_visitor(p).notify for p in props):
            return False
        for prop in props:

            def deliver(data: bytes, prop: PropertySpec = prop) -> None:
                try:
                    value = _decode(prop, data)
                except MapperError as exc:
                    value = exc
                if self._changes.full():
                    self._changes.get_nowait()
                self._changes.put_nowait((prop, value))

            await self._io(self.transport.start_notify(_visitor(prop).characteristic_uuid, deliver))
        return True

    async def next_change(self, timeout: float) -> tuple[PropertySpec, object] | None:
        """The next notification, or None; raises when the link dropped."""
        if self._lost or not self.transport.is_connected:
            raise DeviceUnavailable("link lost")
        try:
            async with asyncio.timeout(timeout):
                return await self._changes.get()
        except TimeoutError:
            if self._lost or not self.transport.is_connected:
                raise DeviceUnavailable("link lost") from None
            return None
