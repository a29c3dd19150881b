"""Request/response over MQTT, on 3.1.1 and 5 alike, for any client of an edgefabric service.

One subscription to the client's reply topic serves every request it makes; answers are
matched by the `correlation_id` every edgefabric reply carries in its body (MQTT 3.1.1 has no
correlation property), and the same id also travels as v5 correlation data where the broker
speaks v5.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from pydantic import BaseModel, ConfigDict, ValidationError

from bus.errors import RequestTimeout
from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from bus.subscription import Overflow


class _Correlated(BaseModel):
    """Reads just the correlation id of any reply."""

    model_config = ConfigDict(extra="ignore")
    correlation_id: str | None = None


class Requester:
    """Sends requests and waits for their answers on `reply_topic` (async context manager).

    Args:
        bus: a connected MQTT client.
        reply_topic: where answers to this client arrive (built by `schemas.topics`).
        name: names the background task (``{name}.replies``).
    """

    def __init__(self, bus: MqttClient, reply_topic: str, *, name: str) -> None:
        self._bus = bus
        self.reply_topic = reply_topic
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._tasks = ServiceTasks(name)

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        await self._tasks.spawn_ready(self._replies, "replies")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.__aexit__(exc_type, exc, tb)

    async def _replies(self, ready: asyncio.Event) -> None:
        async with self._bus.subscribe(
            self.reply_topic, maxsize=1000, overflow=Overflow.DROP_OLDEST
        ) as sub:
            ready.set()
            async for message in sub:
                try:
                    cid = _Correlated.model_validate_json(message.payload).correlation_id
                except ValidationError:
                    continue  # not an answer of ours; nothing waits for it
                future = self._waiting.pop(cid or "", None)
                if future is not None and not future.done():
                    future.set_result(message.payload)

    async def request(
        self, topic: str, payload: bytes, *, correlation_id: str, timeout: float
    ) -> bytes:
        """Publish a request and return the answer's bytes.

        The request body must name `reply_topic` and `correlation_id` itself (MQTT 3.1.1).

        Raises:
            RequestTimeout: no answer within `timeout`.
        """
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        try:
            await self._bus.publish(
                topic,
                payload,
                response_topic=self.reply_topic,
                correlation_data=correlation_id.encode(),
            )
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            raise RequestTimeout(
                f"no answer to {topic!r} on {self.reply_topic} within {timeout} s"
            ) from exc
        finally:
            self._waiting.pop(correlation_id, None)
