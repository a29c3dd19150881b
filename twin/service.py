"""The twin service: desired and reported state of every device, on the bus and on disk.

Topics (all from `schemas.topics`):

- readings ``ef/readings/+/+`` -> reported side (batched into one transaction per burst);
- ``ef/twin/{device}/desired/set`` (`TwinDesiredSet`) -> validated, version-checked, stored,
  acknowledged with a `TwinSetResult` *after* the commit, then written to the device;
- ``ef/twin/{device}/get`` (`TwinGetRequest`) -> `TwinGetResponse`;
- device status -> the document's state;
- every change publishes the document (retained) and the delta on ``ef/twin/{device}/...``;
  refusals and failed writes go to ``ef/twin/{device}/errors`` (and to the requester);
  unreadable payloads to ``ef/dead-letter/twin``. Nothing a client sends can stop the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from bus.lifecycle import ServiceState, ServiceTasks
from bus.mqtt import MqttClient
from bus.subscription import InboundMessage
from mappers.device import DeviceInstance
from schemas import topics
from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.readings import DeviceState, DeviceStatus, Quality, Reading
from schemas.status import DeadLetter
from schemas.twin import (
    TwinDelta,
    TwinDesiredSet,
    TwinError,
    TwinErrorCode,
    TwinGetRequest,
    TwinGetResponse,
    TwinSetResult,
)
from twin.errors import TwinUpdateRefused
from twin.replies import ReplyRoute, device_in_topic
from twin.store import DesiredOutcome, TwinStore
from twin.validation import validate_desired
from twin.writes import DeviceWrites

log = logging.getLogger(__name__)
SERVICE = "twin"
_MAX_BATCH = 500
_START_TIMEOUT_S = 10.0


class TwinService:
    """Keeps each device's twin and serves the twin API on the bus.

    Args:
        bus: the service's own bus connection.
        db_path: the SQLite file (in the edge data dir).
        devices: the mapper device instances; their models drive validation and writes.
            Devices without a model are still twinned, as plain state.
        write_timeout: seconds a mapper has to answer a device write.
        kubeedge: also serve KubeEdge's ``$hw/events/device/...`` topics (twin.kubeedge);
            entering fails with `DollarTopicsRefused` when the broker does not deliver them.

    """

    def __init__(
        self,
        *,
        bus: MqttClient,
        db_path: Path,
        devices: Sequence[DeviceInstance] = (),
        write_timeout: float = 5.0,
        kubeedge: bool = False,
    ) -> None:
        self._bus = bus
        self.store = TwinStore(db_path)
        self.devices = {d.name: d for d in devices}
        for device in devices:
            self.store.set_types(
                device.name, {p.name: p.type.value for p in device.properties if p.type}
            )
        self._tasks = ServiceTasks(SERVICE)
        self.writes = DeviceWrites(
            bus=bus,
            store=self.store,
            timeout=write_timeout,
            on_change=self.publish_change,
            on_error=self.publish_error,
        )
        self.kubeedge = None
        if kubeedge:
            from twin.kubeedge import KubeEdgeAdapter  # noqa: PLC0415 - opt-in

            self.kubeedge = KubeEdgeAdapter(self, bus=bus)
        self.updates = 0
        self.rejected = 0
        self.desired_sets = 0

    @property
    def state(self) -> ServiceState:
        """Where the service is in its life."""
        return self._tasks.state

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        try:
            consumers = {
                "readings": self._consume_readings,
                "desired": self._consume_desired,
                "get": self._consume_get,
                "status": self._consume_status,
                "write-results": self.writes.serve,
            }
            if self.kubeedge is not None:
                consumers.update(self.kubeedge.consumers())
            for name, consumer in consumers.items():
                await self._tasks.spawn_ready(consumer, name, timeout=_START_TIMEOUT_S)
            self._tasks.spawn(self.writes.expire(), "write-timeouts")
            if self.kubeedge is not None:
                await self.kubeedge.check_broker()
            await self._resume()
        except BaseException:
            await self._tasks.__aexit__(None, None, None)
            self.store.close()
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
            self.store.close()

    async def _resume(self) -> None:
        """After a restart: republish every document and retry writes still in the delta."""
        for device in self.store.devices():
            await self.publish_change(device)
            await self._write_delta(device)

    # ---- publishing ----------------------------------------------------------------------

    async def publish_change(self, device: str) -> None:
        """Publish the device's document (retained) and delta, and tell the adapters."""
        document = self.store.document(device)
        await self._bus.publish(topics.twin_document(device), encode(document), retain=True)
        delta = TwinDelta(
            device=device, delta=document.delta(), desired_version=document.desired_version
        )
        await self._bus.publish(topics.twin_delta(device), encode(delta))
        if self.kubeedge is not None:
            await self.kubeedge.on_change(document)

    async def publish_error(self, error: TwinError) -> None:
        """Publish a refused update or failed write on the device's error topic."""
        await self._bus.publish(topics.twin_errors(error.device), encode(error))

    async def dead_letter(self, message: InboundMessage, reason: str) -> None:
        """Put an unreadable payload on the twin's dead-letter topic, with the reason."""
        self.rejected += 1
        letter = DeadLetter.of(
            service=SERVICE, topic=message.topic, reason=reason, payload=message.payload
        )
        await self._bus.publish(topics.dead_letter(SERVICE), encode(letter))

    # ---- desired -------------------------------------------------------------------------

    async def apply_desired(
        self, request: TwinDesiredSet, *, topic: str | None = None
    ) -> DesiredOutcome:
        """Validate, version-check and durably store a desired update.

        `topic`, when given, must name the same device as the body.

        Raises:
            TwinUpdateRefused: VALIDATION (device model), or CONFLICT (stale
                `expected_version`, or every property lost to a newer edge change).

        """
        if topic is not None and device_in_topic(topic) != request.device:
            raise TwinUpdateRefused(
                TwinErrorCode.VALIDATION,
                f"body names device {request.device!r}, topic is {topic!r}",
            )
        validate_desired(self.devices.get(request.device), request.values)
        current = self.store.desired_version(request.device)
        if request.expected_version is not None and request.expected_version != current:
            raise TwinUpdateRefused(
                TwinErrorCode.CONFLICT,
                f"expected desired version {request.expected_version}, the twin is at {current}",
            )
        outcome = self.store.set_desired(
            request.device,
            request.values,
            source=request.source,
            timestamp=request.timestamp,
            base_versions=request.base_versions,
        )
        if outcome.lost and not outcome.applied:
            raise TwinUpdateRefused(TwinErrorCode.CONFLICT, "newer edge change", outcome.lost)
        self.desired_sets += 1
        return outcome

    async def after_desired(self, device: str, outcome: DesiredOutcome) -> None:
        """Publish the change, report partial conflicts, and send the device write."""
        if outcome.lost:
            await self.publish_error(
                TwinError(
                    device=device,
                    code=TwinErrorCode.CONFLICT,
                    reason="cloud update lost to a newer edge change",
                    properties=outcome.lost,
                )
            )
        await self.publish_change(device)
        await self._write_delta(device, only=set(outcome.applied))

    async def _write_delta(self, device: str, only: set[str] | None = None) -> None:
        model = self.devices.get(device)
        if model is None:
            return
        busy = self.writes.pending_for(device)
        values = {
            name: value
            for name, value in self.store.document(device).delta().items()
            if (only is None or name in only)
            and (only is not None or name not in busy)
            and (spec := model.property(name)) is not None
            and spec.writable
        }
        await self.writes.request(device, values)

    async def _on_desired(self, message: InboundMessage) -> None:
        try:
            request = decode(TwinDesiredSet, message.payload)
        except SchemaError as exc:
            await self.dead_letter(message, exc.reason)
            return
        route = ReplyRoute.of(message, request.reply_to, request.correlation_id)
        if route.refusal is not None:
            await self.dead_letter(message, route.refusal)
            return
        try:
            outcome = await self.apply_desired(request, topic=message.topic)
        except TwinUpdateRefused as exc:
            error = TwinError(
                device=request.device,
                code=exc.code,
                reason=exc.reason,
                properties=exc.properties,
                correlation_id=route.correlation_id,
            )
            await self.publish_error(error)
            result = TwinSetResult(
                device=request.device,
                correlation_id=route.correlation_id,
                ok=False,
                desired_version=self.store.desired_version(request.device),
                error=error,
            )
            await route.send(self._bus, encode(result))
            return
        result = TwinSetResult(
            device=request.device,
            correlation_id=route.correlation_id,
            ok=True,
            desired_version=outcome.desired_version,
        )
        await route.send(self._bus, encode(result))
        await self.after_desired(request.device, outcome)

    async def _consume_desired(self, ready: asyncio.Event) -> None:
        async with self._bus.subscribe(topics.twin_desired_set_filter(), maxsize=1000) as sub:
            ready.set()
            async for message in sub:
                await self._on_desired(message)

    # ---- get, status, readings -----------------------------------------------------------

    async def _on_get(self, message: InboundMessage) -> None:
        device = device_in_topic(message.topic)
        try:
            if not message.payload.strip() and device is not None:
                request = TwinGetRequest(device=device)
            else:
                request = decode(TwinGetRequest, message.payload)
        except SchemaError as exc:
            await self.dead_letter(message, exc.reason)
            return
        route = ReplyRoute.of(message, request.reply_to, request.correlation_id)
        if route.topic is None:
            reason = route.refusal or "get request without reply_to or response topic"
            await self.dead_letter(message, reason)
            return
        response = TwinGetResponse(
            device=request.device,
            correlation_id=route.correlation_id,
            document=self.store.document(request.device),
        )
        await route.send(self._bus, encode(response))

    async def _consume_get(self, ready: asyncio.Event) -> None:
        async with self._bus.subscribe(topics.twin_get_filter(), maxsize=1000) as sub:
            ready.set()
            async for message in sub:
                await self._on_get(message)

    async def set_state(self, device: str, state: DeviceState, reason: str = "") -> None:
        """Record a device's link state; publish, and retry open writes when it comes back."""
        if not self.store.set_state(device, state, reason):
            return
        await self.publish_change(device)
        if state is DeviceState.ONLINE:
            await self._write_delta(device)

    async def _consume_status(self, ready: asyncio.Event) -> None:
        async with self._bus.subscribe(topics.device_status_filter(), maxsize=1000) as sub:
            ready.set()
            async for message in sub:
                try:
                    status = decode(DeviceStatus, message.payload)
                except SchemaError as exc:
                    await self.dead_letter(message, exc.reason)
                    continue
                if message.topic != topics.device_status(status.device):  # topic says whose
                    reason = f"body names {status.device}, topic is {message.topic}"
                    await self.dead_letter(message, reason)
                    continue
                await self.set_state(status.device, status.state, status.reason)

    async def report(self, rows: list[tuple[str, str, object, float]]) -> None:
        """Store reported values in one transaction and publish the devices that changed."""
        changed = self.store.report_many(rows)
        self.updates += len(rows)
        for device in sorted(changed):
            await self.publish_change(device)

    async def _consume_readings(self, ready: asyncio.Event) -> None:
        async with self._bus.subscribe(topics.readings_filter(), maxsize=2000) as sub:
            ready.set()
            async for first in sub:
                batch: list[InboundMessage] = [first]
                while len(batch) < _MAX_BATCH and (more := sub.get_nowait()) is not None:
                    batch.append(more)
                rows: list[tuple[str, str, object, float]] = []
                for message in batch:
                    try:
                        reading = decode(Reading, message.payload)
                    except SchemaError as exc:
                        await self.dead_letter(message, exc.reason)
                        continue
                    # The ACL confines a mapper by topic, so the topic, not the body, says
                    # whose reading it is (docs/security.md: a forged body names another device).
                    if message.topic.split("/")[2:] != [reading.device, reading.property]:
                        await self.dead_letter(
                            message,
                            f"body names {reading.device}/{reading.property}, "
                            f"topic is {message.topic}",
                        )
                        continue
                    if reading.quality is not Quality.BAD:
                        rows.append(
                            (reading.device, reading.property, reading.value, reading.timestamp)
                        )
                await self.report(rows)
