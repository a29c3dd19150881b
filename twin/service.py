"""The twin service: keeps each device's reported state from the readings on the bus."""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import Self

from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from bus.subscription import InboundMessage
from schemas import topics
from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.readings import Reading
from schemas.status import DeadLetter
from twin.store import TwinStore

log = logging.getLogger(__name__)
SERVICE = "twin"
_MAX_BATCH = 500


class TwinService:
    """Subscribes to every reading and records it as the device's reported state.

    Readings that arrive together are written in one transaction, which is what keeps the
    twin at bus speed with SQLite underneath.
    """

    def __init__(self, *, bus: MqttClient, db_path: Path) -> None:
        self._bus = bus
        self.store = TwinStore(db_path)
        self._tasks = ServiceTasks(SERVICE)
        self.updates = 0
        self.rejected = 0

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        self._tasks.spawn(self._consume(), "readings")
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

    async def _consume(self) -> None:
        async with self._bus.subscribe(topics.readings_filter(), maxsize=2000) as sub:
            async for first in sub:
                batch: list[InboundMessage] = [first]
                while len(batch) < _MAX_BATCH and (more := sub.get_nowait()) is not None:
                    batch.append(more)
                rows = []
                for message in batch:
                    try:
                        reading = decode(Reading, message.payload)
                    except SchemaError as exc:
                        await self._dead_letter(message, exc.reason)
                        continue
                    rows.append(
                        (reading.device, reading.property, reading.value, reading.timestamp)
                    )
                self.store.report_many(rows)
                self.updates += len(rows)

    async def _dead_letter(self, message: InboundMessage, reason: str) -> None:
        self.rejected += 1
        letter = DeadLetter.of(service=SERVICE, topic=message.topic, reason=reason,
                               payload=message.payload)
        await self._bus.publish(topics.dead_letter(SERVICE), encode(letter))
