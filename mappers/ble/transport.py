"""The transport boundary between the Bluetooth LE mapper and the radio.

`BleTransport` is everything the mapper needs from a GATT client. `BleakTransport` is the
real one (bleak, which talks to BlueZ / CoreBluetooth / WinRT); `mappers.simulators.ble_sensor`
provides a fake peripheral at exactly this boundary, because the machines that run the tests
have no Bluetooth adapter. Everything above this line — converter, reconnects, status, writes —
runs for real in the tests.

Contract:
- `connect` finds the peripheral (by address, else by advertised name) and connects, or
  raises `DeviceUnavailable`;
- `read`/`write` raise `DeviceUnavailable` when the link is down and `DeviceRefused` when
  the peripheral answers with an ATT error;
- `start_notify` delivers each notification's bytes to the callback, in order;
- `on_disconnect` is called once when the link drops without `disconnect` being asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from mappers.ble.visitor import BleConnection
from mappers.errors import DeviceRefused, DeviceUnavailable

NotifyCallback = Callable[[bytes], None]


class BleTransport(Protocol):
    """A GATT client for one peripheral."""

    @property
    def is_connected(self) -> bool:
        """True while the link is up."""
        ...

    async def connect(self, on_disconnect: Callable[[], None]) -> None:
        """Find and connect; `on_disconnect` fires when the link drops by itself."""
        ...

    async def disconnect(self) -> None:
        """Disconnect; safe twice."""
        ...

    async def read(self, uuid: str) -> bytes:
        """Read one characteristic."""
        ...

    async def write(self, uuid: str, data: bytes) -> None:
        """Write one characteristic (with response)."""
        ...

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None:
        """Subscribe to notifications of one characteristic."""
        ...


class BleakTransport:
    """The real transport, over bleak."""

    def __init__(self, connection: BleConnection) -> None:
        self._connection = connection
        self._client: Any = None

    @property
    def is_connected(self) -> bool:
        """True while bleak reports the link up."""
        return self._client is not None and bool(self._client.is_connected)

    async def connect(self, on_disconnect: Callable[[], None]) -> None:
        """Scan for the peripheral, then connect to it."""
        from bleak import BleakClient, BleakScanner  # noqa: PLC0415 - needs a radio stack
        from bleak.exc import BleakError  # noqa: PLC0415

        conn = self._connection
        try:
            if conn.mac_address is not None:
                device = await BleakScanner.find_device_by_address(
                    conn.mac_address, timeout=conn.timeout_s
                )
            else:
                device = await BleakScanner.find_device_by_name(
                    conn.name or "", timeout=conn.timeout_s
                )
            if device is None:
                raise DeviceUnavailable(f"{conn.mac_address or conn.name} not found")
            client = BleakClient(
                device, disconnected_callback=lambda _: on_disconnect(), timeout=conn.timeout_s
            )
            await client.connect()
        except (BleakError, OSError, TimeoutError) as exc:
            raise DeviceUnavailable(f"connect failed: {exc!r}") from exc
        self._client = client

    async def disconnect(self) -> None:
        """Disconnect; safe twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.disconnect()

    async def read(self, uuid: str) -> bytes:
        """Read one characteristic."""
        return bytes(await self._call("read_gatt_char", uuid))

    async def write(self, uuid: str, data: bytes) -> None:
        """Write one characteristic with response."""
        await self._call("write_gatt_char", uuid, data, response=True)

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None:
        """Deliver notifications as bytes."""
        await self._call("start_notify", uuid, lambda _char, data: callback(bytes(data)))

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from bleak.exc import BleakError  # noqa: PLC0415

        if not self.is_connected:
            raise DeviceUnavailable("not connected")
        try:
            return await getattr(self._client, method)(*args, **kwargs)
        except BleakError as exc:
            if not self.is_connected:
                raise DeviceUnavailable(f"link lost: {exc}") from exc
            raise DeviceRefused(str(exc)) from exc
        except (OSError, TimeoutError) as exc:
            raise DeviceUnavailable(f"link lost: {exc!r}") from exc
