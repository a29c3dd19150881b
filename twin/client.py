"""A client of the twin API, for apps, the CLI, tests and the bench.

Requests carry `reply_to` and `correlation_id` in the body (works on MQTT 3.1.1) and, when the
broker speaks v5, the same as response-topic / correlation-data properties. One reply
subscription per client serves every request; answers are matched by correlation id.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Self

from bus.mqtt import MqttClient
from bus.requester import Requester
from bus.subscription import InboundMessage, Overflow
from schemas import topics
from schemas.base import JsonValue, new_message_id
from schemas.codec import decode, encode
from schemas.twin import (
    TwinDesiredSet,
    TwinDocument,
    TwinGetRequest,
    TwinGetResponse,
    TwinSetResult,
    TwinSource,
)


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
        self._source = source
        self._requests = Requester(
            bus, topics.twin_reply(name or f"client-{new_message_id()[:12]}"), name="twin.client"
        )
        self.reply_topic = self._requests.reply_topic

    async def __aenter__(self) -> Self:
        await self._requests.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._requests.__aexit__(exc_type, exc, tb)

    async def _request(self, topic: str, payload: bytes, cid: str, timeout: float) -> bytes:
        return await self._requests.request(topic, payload, correlation_id=cid, timeout=timeout)

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
