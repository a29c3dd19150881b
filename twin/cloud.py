"""The cloud half of twin sync: every edge's twins as the cloud sees them, and desired changes down.

Up: the bridge forwards each edge's ``ef/twin/{device}/document`` (retained, the whole state) and
``ef/devices/{device}/status`` into the hub's uplink stream; `CloudTwins` reads them with one
durable `CloudConsumer` and keeps the latest document and status per (edge, device).

Down: `CloudTwins.set_desired` builds a `TwinDesiredSet` with ``source: cloud`` and, per
property, the `base_versions` the cloud last saw in that edge's document, stamped with the time
the change was *made*. That is what the edge's reconciliation policy (docs/twin.md, "Cloud sync
policy") needs to tell a plain successor from a concurrent offline edit. The set goes into a
bounded outbox and a sender task stores it in the downlink stream (`CloudPublisher`), retrying
with the same message id while the hub is away, so a change made during an outage is sent when
the hub returns, with its original timestamp, and never twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from types import TracebackType
from typing import Self

from bus.lifecycle import ServiceState, ServiceTasks, raise_if_cancelled
from cloud_bridge.cloud_consumer import CloudConsumer, UplinkMessage
from cloud_bridge.downlink import TWIN_DESIRED, CloudPublisher
from cloud_bridge.errors import BridgeError
from schemas.base import JsonValue
from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.readings import DeviceStatus
from schemas.twin import TwinDesiredSet, TwinDocument, TwinSource, TwinVersion
from twin.errors import TwinServiceError

log = logging.getLogger(__name__)
SERVICE = "twin.cloud"
_RETRY_MIN_S = 0.05
_RETRY_MAX_S = 1.0


class CloudOutboxFull(TwinServiceError):
    """More desired changes are waiting for the hub than the outbox holds."""


class CloudTwins:
    """The cloud's view of edge twins, and the way the cloud sets desired values.

    Args:
        hub_url: the hub's client URL.
        durable: name of the uplink consumer (one `CloudTwins` per name).
        outbox: desired changes that may wait for the hub at once.

    """

    def __init__(
        self,
        hub_url: str,
        *,
        durable: str = "twin-cloud",
        outbox: int = 10_000,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self._consumer = CloudConsumer(hub_url, durable=durable, user=user, password=password)
        self._publisher = CloudPublisher(hub_url, user=user, password=password)
        self._outbox: asyncio.Queue[tuple[str, TwinDesiredSet]] = asyncio.Queue(outbox)
        self._tasks = ServiceTasks(SERVICE)
        self._documents: dict[tuple[str, str], TwinDocument] = {}
        self._statuses: dict[tuple[str, str], DeviceStatus] = {}
        self._in_flight = 0
        self.sent = 0
        self.rejected = 0

    @property
    def state(self) -> ServiceState:
        """Where the service is in its life."""
        return self._tasks.state

    @property
    def pending(self) -> int:
        """Desired changes not yet stored in the hub's downlink stream."""
        return self._outbox.qsize() + self._in_flight

    async def __aenter__(self) -> Self:
        await self._consumer.__aenter__()
        try:
            await self._publisher.__aenter__()
            try:
                await self._tasks.__aenter__()
                self._tasks.spawn(self._consume(), "uplink")
                self._tasks.spawn(self._send(), "downlink")
            except BaseException:
                await self._publisher.__aexit__(None, None, None)
                raise
        except BaseException:
            await self._consumer.__aexit__(None, None, None)
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
            try:
                await self._publisher.__aexit__(exc_type, exc, tb)
            finally:
                await self._consumer.__aexit__(exc_type, exc, tb)

    # ---- the view ------------------------------------------------------------------------

    def document(self, edge: str, device: str) -> TwinDocument | None:
        """The latest twin document `edge` sent for `device`, if any arrived."""
        return self._documents.get((edge, device))

    def status(self, edge: str, device: str) -> DeviceStatus | None:
        """The latest device status `edge` sent for `device`, if any arrived."""
        return self._statuses.get((edge, device))

    def _accept(self, message: UplinkMessage) -> None:
        levels = message.topic.split("/")
        key_edge = message.edge
        try:
            if levels[1:2] == ["twin"] and levels[-1] == "document":
                document = decode(TwinDocument, message.payload)
                held = self._documents.get((key_edge, document.device))
                if held is None or document.timestamp >= held.timestamp:
                    self._documents[(key_edge, document.device)] = document
            elif levels[1:2] == ["devices"] and levels[-1] == "status":
                status = decode(DeviceStatus, message.payload)
                self._statuses[(key_edge, status.device)] = status
        except SchemaError as exc:
            self.rejected += 1
            log.warning("twin uplink from %s on %s: %s", key_edge, message.topic, exc.reason)

    async def _consume(self) -> None:
        async for message in self._consumer.messages():
            self._accept(message)

    # ---- desired, down -------------------------------------------------------------------

    def set_desired(self, edge: str, device: str, values: dict[str, JsonValue]) -> TwinDesiredSet:
        """Queue a desired change for one device of one edge, built on the cloud's view.

        Returns at once; the change is stored in the hub when it is reachable (see `pending`).

        Returns:
            The message that will be delivered (its timestamp is now, the time of the change).

        Raises:
            CloudOutboxFull: too many changes are already waiting for the hub.
            pydantic.ValidationError: a device or property name is invalid.

        """
        document = self._documents.get((edge, device))
        base: dict[str, TwinVersion] = {}
        for name in values:
            prop = document.properties.get(name) if document is not None else None
            base[name] = prop.desired.version if prop and prop.desired else TwinVersion()
        request = TwinDesiredSet(
            device=device, values=values, base_versions=base, source=TwinSource.CLOUD
        )
        try:
            self._outbox.put_nowait((edge, request))
        except asyncio.QueueFull:
            raise CloudOutboxFull(
                f"{self._outbox.maxsize} desired changes already wait for the hub"
            ) from None
        return request

    async def _send(self) -> None:
        while True:
            edge, request = await self._outbox.get()
            self._in_flight = 1
            delay = _RETRY_MIN_S
            while True:
                raise_if_cancelled()  # nats.py's wait_for may have dropped a cancel
                try:
                    await self._publisher.publish(
                        edge,
                        TWIN_DESIRED,
                        request.device,
                        payload=encode(request),
                        message_id=request.message_id,
                    )
                    break
                except BridgeError as exc:
                    log.debug("desired change for %s/%s waits: %s", edge, request.device, exc)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, _RETRY_MAX_S)
            self._in_flight = 0
            self.sent += 1
