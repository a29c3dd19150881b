"""A fake BLE peripheral at the `BleTransport` boundary (these machines have no radio).

It behaves like a GATT server seen through bleak: characteristics hold bytes, reads return
them, writes replace them (or fail with an ATT error for read-only ones), notifications are
delivered on `notify`, and `drop()` / `refuse_connections` model a sensor walking out of
range. A TI SensorTag-like default layout::

    f000aa01-...  temperature  bytes 0-1 object, 2-3 ambient (int16 little endian, /128 degC)
    f000aa02-...  config       1 byte, writable
"""

from __future__ import annotations

from collections.abc import Callable

from mappers.ble.transport import NotifyCallback
from mappers.errors import DeviceRefused, DeviceUnavailable

TEMPERATURE_UUID = "f000aa01-0451-4000-b000-000000000000"
CONFIG_UUID = "f000aa02-0451-4000-b000-000000000000"


class FakePeripheral:
    """Shared state of one simulated sensor; `transport()` gives a client for it."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {
            TEMPERATURE_UUID: (2944).to_bytes(2, "little") + (3008).to_bytes(2, "little"),
            CONFIG_UUID: b"\x00",
        }
        self.writable = {CONFIG_UUID}
        self.refuse_connections = False
        self.connects = 0
        self._link: FakeTransport | None = None

    def transport(self) -> FakeTransport:
        """A transport to hand to `BleDriver`."""
        return FakeTransport(self)

    def notify(self, uuid: str, data: bytes) -> None:
        """Change a value and notify the connected client, as the sensor would."""
        self.values[uuid] = data
        if self._link is not None:
            self._link.deliver(uuid, data)

    def drop(self) -> None:
        """The sensor goes out of range: the link drops without a disconnect request."""
        link, self._link = self._link, None
        if link is not None:
            link.lost()


class FakeTransport:
    """`BleTransport` over a `FakePeripheral`."""

    def __init__(self, peripheral: FakePeripheral) -> None:
        self._peripheral = peripheral
        self._connected = False
        self._on_disconnect: Callable[[], None] | None = None
        self._subscribers: dict[str, NotifyCallback] = {}

    @property
    def is_connected(self) -> bool:
        """True while linked."""
        return self._connected

    async def connect(self, on_disconnect: Callable[[], None]) -> None:
        """Connect unless the peripheral refuses (out of range)."""
        if self._peripheral.refuse_connections:
            raise DeviceUnavailable("peripheral not found")
        self._connected = True
        self._on_disconnect = on_disconnect
        self._subscribers.clear()
        self._peripheral._link = self
        self._peripheral.connects += 1

    async def disconnect(self) -> None:
        """Disconnect; safe twice."""
        self._connected = False
        if self._peripheral._link is self:
            self._peripheral._link = None

    def lost(self) -> None:
        """Called by the peripheral when it drops the link."""
        self._connected = False
        if self._on_disconnect is not None:
            self._on_disconnect()

    def deliver(self, uuid: str, data: bytes) -> None:
        """Deliver a notification to a subscriber."""
        callback = self._subscribers.get(uuid)
        if callback is not None:
            callback(data)

    def _check(self, uuid: str) -> None:
        if not self._connected:
            raise DeviceUnavailable("not connected")
        if uuid not in self._peripheral.values:
            raise DeviceRefused(f"ATT error: no characteristic {uuid}")

    async def read(self, uuid: str) -> bytes:
        """Current bytes of a characteristic."""
        self._check(uuid)
        return self._peripheral.values[uuid]

    async def write(self, uuid: str, data: bytes) -> None:
        """Replace a writable characteristic's bytes."""
        self._check(uuid)
        if uuid not in self._peripheral.writable:
            raise DeviceRefused("ATT error 0x03: write not permitted")
        self._peripheral.values[uuid] = data

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None:
        """Subscribe to one characteristic."""
        self._check(uuid)
        self._subscribers[uuid] = callback
