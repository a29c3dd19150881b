"""A client of the twin API, for apps, the CLI, tests and the bench.

Requests carry `reply_to` and `correlation_id` in the body (works on MQTT 3.1.1) and, when the
broker speaks v5, the same as response-topic / correlation-data properties. One reply
subscription per client serves every request; answers are matched by correlation id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Self

from pydantic import BaseModel, ConfigDict

from bus.errors import RequestTimeout
from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from bus.subscription import InboundMessage, Overflow
from schemas import topics
from schemas.base import JsonValue, new_message_id
from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.twin import (
    TwinDesiredSet,
    TwinDocument,
    TwinGetRequest,
    TwinGetResponse,
    TwinSetResult,
    TwinSource,
)


class _Correlated(BaseModel):
    """Reads just the correlation id of any twin reply."""

    model_config = ConfigDict(extra="ignore")
    correlation_id: str | None = None


class TwinClient:
    """Get, set and watch device twins over the bus.

    Args:
        bus: a connected `MqttClient`.
        name: names the reply topic (``topics.twin_reply(name)``); unique per client.
        source: recorded on desired values this client sets.

    """

    def __init__(
        self, bus: MqttClient, *, name: str | None = None, source: TwinSource = TwinSource.APP
    ) -> None:
        self._bus = bus
        self.reply_topic = topics.twin_reply(name or f"client-{new_message_id()[:12]}")
        self._source = source
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._tasks = ServiceTasks("twin.client")

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        ready = asyncio.Event()
        self._tasks.spawn(self._replies(ready), "replies")
        await ready.wait()
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
                self._match(message)

    def _match(self, message: InboundMessage) -> None:
        try:
            cid = decode(_Correlated, message.payload).correlation_id
        except SchemaError:
            return
        future = self._waiting.pop(cid or "", None)
        if future is not None and not future.done():
            future.set_result(message.payload)

    async def _request(self, topic: str, payload: bytes, cid: str, timeout: float) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = future
        try:
            await self._bus.publish(
                topic, payload, response_topic=self.reply_topic, correlation_data=cid.encode()
            )
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            raise RequestTimeout(
                f"no twin answer on {self.reply_topic} within {timeout} s"
            ) from exc
        finally:
            self._waiting.pop(cid, None)

    async def get(self, device: str, *, timeout: float = 5.0) -> TwinDocument:
        """The device's twin document.

        Raises:
            RequestTimeout: the twin service did not answer in time.

        """
        cid = new_message_id()
        request = TwinGetRequest(device=device, reply_to=self.reply_topic, correlation_id=cid)
        raw = await self._request(topics.twin_get(device), encode(request), cid, timeout)
        return decode(TwinGetResponse, raw).document

    async def set(
        self,
        device: str,
        values: Mapping[str, JsonValue],
        *,
        expected_version: int | None = None,
        timeout: float = 5.0,
    ) -> TwinSetResult:
        """Set desired values; returns once the twin stored them (or refused them).

        Raises:
            RequestTimeout: the twin service did not answer in time.

        """
        cid = new_message_id()
        request = TwinDesiredSet(
            device=device,
            values=dict(values),
            expected_version=expected_version,
            source=self._source,
            reply_to=self.reply_topic,
            correlation_id=cid,
        )
        raw = await self._request(topics.twin_desired_set(device), encode(request), cid, timeout)
        return decode(TwinSetResult, raw)


@contextlib.asynccontextmanager
async def watch(
    bus: MqttClient, device: str, maxsize: int = 1000
) -> AsyncIterator[AsyncIterator[InboundMessage]]:
    """Everything the twin publishes about `device` (document, delta, errors), live.

    A slow watcher drops the oldest messages rather than slowing the bus.
    """
    async with bus.subscribe(
        topics.twin_filter(device), maxsize=maxsize, overflow=Overflow.DROP_OLDEST
    ) as sub:
        yield sub
