"""The runtime every mapper shares: cycles, status, the write path and publishing.

One `DeviceMapper` runs one device through its protocol `Driver`. It never crashes on a
device fault: link failures put the device offline and reconnect with capped, jittered
back-off; a property the device refuses degrades the device, with the reason; a bad write
request goes to the dead-letter topic. Everything that touches the device is serialised by
one lock, so a write never interleaves with a poll on a half-duplex link (RTU).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from bus.errors import NotConnected
from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from bus.subscription import InboundMessage
from mappers.device import DeviceInstance, PropertySpec
from mappers.driver import Driver, ReadResult
from mappers.errors import DeviceUnavailable, MapperError, UnknownProperty
from mappers.values import to_reported
from mappers.writes import WriteHandler
from schemas import topics
from schemas.base import JsonValue
from schemas.codec import encode
from schemas.readings import DeviceState, DeviceStatus, Reading

log = logging.getLogger(__name__)

ONE_DAY_MS = 24 * 3600 * 1000
SERVICE = "mappers"


class DeviceMapper:
    """One device's mapper, as an async context manager.

    Entering starts the collect loops (one per distinct collect/report cycle pair) and
    subscribes to the device's write topic; it returns once that subscription is in place so
    a write sent right after start-up is not lost. Leaving cancels everything and closes the
    link.
    """

    def __init__(self, device: DeviceInstance, driver: Driver, *, bus: MqttClient) -> None:
        self.device = device
        self.driver = driver
        self.bus = bus
        self.protocol = device.protocol.value
        self.state: DeviceState | None = None
        self.reason = ""
        self.readings = 0
        self.errors = 0
        self.reconnects = 0
        self.lock = asyncio.Lock()
        self._tasks = ServiceTasks(f"mappers.{self.protocol}[{device.name}]")
        self._failing: dict[str, str] = {}
        self._latest: dict[str, tuple[JsonValue, float]] = {}
        self._last_sent: dict[str, float] = {}
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._writes = WriteHandler(self)
        self._watching = asyncio.Event()
        for prop in device.properties:
            for cycle in device.cycles_of(prop):
                if cycle is not None and cycle > ONE_DAY_MS:
                    log.warning(
                        "%s.%s: cycle of %d ms is longer than a day; cycles are milliseconds",
                        device.name,
                        prop.name,
                        cycle,
                    )

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        try:
            groups: dict[tuple[int, int | None], list[PropertySpec]] = {}
            for prop in self.device.properties:
                groups.setdefault(self.device.cycles_of(prop), []).append(prop)
            for (collect, report), props in groups.items():
                self._tasks.spawn(self._collect_loop(props, collect, report), f"collect[{collect}]")
                if report is not None:
                    self._tasks.spawn(self._report_loop(props, report), f"report[{report}]")
            self._tasks.spawn(self._push_loop(), "push")
            await self._tasks.spawn_ready(self._writes.serve, "writes")
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
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
            await self.driver.close()

    # ---- link ----------------------------------------------------------------------------

    async def ensure_connected(self, *, force: bool = False) -> None:
        """Connect if needed; hold `lock` when calling.

        Raises:
            DeviceUnavailable: still backing off after a failure (unless `force`), or the
                connect attempt failed.

        """
        if self.driver.connected:
            return
        loop = asyncio.get_running_loop()
        if not force and loop.time() < self._next_attempt:
            raise DeviceUnavailable(self.reason or "reconnecting")
        try:
            await self.driver.connect()
        except DeviceUnavailable as exc:
            await self.link_failed(exc)
            raise
        self._backoff = 0.0
        self.reconnects += 1
        self._watching.clear()
        if await self.driver.watch(self.device.properties):
            self._watching.set()

    async def link_failed(self, exc: MapperError) -> None:
        """Close the link, go offline and schedule the next attempt with back-off."""
        self.errors += 1
        self._watching.clear()
        await self.driver.close()
        initial, cap = _backoff_bounds(self.device)
        self._backoff = min(cap, self._backoff * 2) if self._backoff else initial
        jittered = self._backoff * random.uniform(0.5, 1.0)
        self._next_attempt = asyncio.get_running_loop().time() + jittered
        await self.set_state(DeviceState.OFFLINE, str(exc))

    # ---- reads ---------------------------------------------------------------------------

    async def read(self, props: Sequence[PropertySpec]) -> ReadResult:
        """Read `props` now (connecting if needed); link failures are handled here.

        Raises:
            DeviceUnavailable: the link is down (the device was put offline).

        """
        async with self.lock:
            await self.ensure_connected()
            try:
                return await self.driver.read(props)
            except DeviceUnavailable as exc:
                await self.link_failed(exc)
                raise

    async def _collect_loop(
        self, props: list[PropertySpec], collect_ms: int, report_ms: int | None
    ) -> None:
        loop = asyncio.get_running_loop()
        cycle = collect_ms / 1000
        next_tick = loop.time()
        while True:
            if not self._watching.is_set():
                await self._collect_once(props, publish=report_ms is None)
            next_tick += cycle
            now = loop.time()
            if next_tick < now:  # overran: skip the missed ticks rather than burst
                next_tick = now + cycle - (now - next_tick) % cycle
            await asyncio.sleep(next_tick - now)

    async def _collect_once(self, props: list[PropertySpec], *, publish: bool) -> None:
        try:
            values = await self.read(props)
        except DeviceUnavailable:
            return
        await self.accept(values, publish=publish)

    async def accept(self, values: ReadResult, *, publish: bool) -> None:
        """Record a batch of read results, publish good ones if asked, and update status."""
        stamp = asyncio.get_running_loop().time()
        for name, value in values.items():
            prop = self.device.property(name)
            if prop is None:
                continue
            if isinstance(value, MapperError):
                self.errors += 1
                self._failing[name] = f"{name}: {value}"
                continue
            self._failing.pop(name, None)
            reported = to_reported(prop, value)
            self._latest[name] = (reported, stamp)
            # The first value goes out at once: a subscriber should not wait a whole report
            # cycle after start-up to learn the device's state.
            if publish or name not in self._last_sent:
                self._last_sent[name] = stamp
                await self.publish_reading(prop, reported)
        await self._refresh_state()

    async def _push_loop(self) -> None:
        """Drain pushed values (subscriptions, notifications) while the driver pushes."""
        check_every = min(self.device.cycles_of(p)[0] for p in self.device.properties) / 1000
        while True:
            await self._watching.wait()
            try:
                change = await self.driver.next_change(max(check_every, 0.5))
            except DeviceUnavailable as exc:
                async with self.lock:
                    await self.link_failed(exc)
                continue
            if change is None:
                continue
            prop, value = change
            _, report = self.device.cycles_of(prop)
            await self.accept({prop.name: value}, publish=report is None)

    async def _report_loop(self, props: list[PropertySpec], report_ms: int) -> None:
        while True:
            await asyncio.sleep(report_ms / 1000)
            for prop in props:
                latest = self._latest.get(prop.name)
                if latest is None or self._last_sent.get(prop.name) == latest[1]:
                    continue  # nothing new since the last report
                self._last_sent[prop.name] = latest[1]
                await self.publish_reading(prop, latest[0])

    async def publish_reading(self, prop: PropertySpec, value: JsonValue) -> None:
        """Publish one reading; a broker outage is counted, never raised into the loops."""
        reading = Reading(device=self.device.name, property=prop.name, value=value, unit=prop.unit)
        try:
            await self.bus.publish(topics.reading(self.device.name, prop.name), encode(reading))
        except NotConnected as exc:
            self.errors += 1
            log.warning("%s: reading not published: %s", self.device.name, exc)
            return
        self.readings += 1

    # ---- status --------------------------------------------------------------------------

    async def _refresh_state(self) -> None:
        if self._failing:
            reason = "; ".join(sorted(self._failing.values()))
            await self.set_state(DeviceState.DEGRADED, reason)
        else:
            await self.set_state(DeviceState.ONLINE, "")

    async def set_state(self, state: DeviceState, reason: str) -> None:
        """Publish the device status (retained) when its state or reason changed."""
        if state is self.state and reason == self.reason:
            return
        self.state, self.reason = state, reason
        if state is not DeviceState.DEGRADED:
            self._failing.clear()
        status = DeviceStatus(
            device=self.device.name, state=state, reason=reason, errors=self.errors
        )
        log.info("%s: %s %s", self.device.name, state.value, reason)
        try:
            await self.bus.publish(
                topics.device_status(self.device.name), encode(status), retain=True
            )
        except NotConnected as exc:
            log.warning("%s: status not published: %s", self.device.name, exc)

    def check_property(self, name: str) -> PropertySpec:
        """The property called `name`.

        Raises:
            UnknownProperty: the device has none.

        """
        prop = self.device.property(name)
        if prop is None:
            raise UnknownProperty(f"device {self.device.name!r} has no property {name!r}")
        return prop

    async def dead_letter(self, message: InboundMessage, reason: str) -> None:
        """Put a refused request on the dead-letter topic instead of dropping it silently."""
        from schemas.status import DeadLetter  # noqa: PLC0415 - keep the import local

        letter = DeadLetter.of(
            service=SERVICE, topic=message.topic, reason=reason, payload=message.payload
        )
        self.errors += 1
        try:
            await self.bus.publish(topics.dead_letter(SERVICE), encode(letter))
        except NotConnected as exc:
            log.warning("%s: dead letter not published: %s", self.device.name, exc)


def _backoff_bounds(device: DeviceInstance) -> tuple[float, float]:
    conn = device.modbus or device.opcua or device.bluetooth
    if conn is None:  # pragma: no cover - validated by DeviceInstance
        return 0.1, 5.0
    return conn.backoff_initial_s, conn.backoff_max_s
