"""Shared helpers of the twin tests: a running twin with a client, and a collector."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from bus.mqtt import MqttClient
from bus.subscription import InboundMessage, Overflow
from mappers.device import DeviceInstance
from schemas.codec import decode
from tests.support import wait_for
from twin.client import TwinClient
from twin.service import TwinService

M = TypeVar("M", bound=BaseModel)


@dataclass
class Collected:
    messages: list[InboundMessage] = field(default_factory=list)

    def decoded(self, model: type[M]) -> list[M]:
        return [decode(model, m.payload) for m in self.messages]

    async def wait(self, predicate: Callable[[list[InboundMessage]], object], what: str) -> None:
        await wait_for(lambda: predicate(self.messages), timeout=10, what=what)


@contextlib.asynccontextmanager
async def collect(bus: MqttClient, topic_filter: str) -> AsyncIterator[Collected]:
    out = Collected()
    async with bus.subscribe(topic_filter, maxsize=10_000, overflow=Overflow.DROP_OLDEST) as sub:

        async def pump() -> None:
            async for message in sub:
                out.messages.append(message)

        async with asyncio.TaskGroup() as group:
            task = group.create_task(pump(), name="test.collect")
            try:
                yield out
            finally:
                task.cancel()


@dataclass
class Running:
    twin: TwinService
    client: TwinClient
    app_bus: MqttClient


@contextlib.asynccontextmanager
async def running_twin(
    url: str,
    db: Path,
    devices: Sequence[DeviceInstance] = (),
    *,
    write_timeout: float = 5.0,
    kubeedge: bool = False,
) -> AsyncIterator[Running]:
    async with (
        MqttClient(url, client_id="twin-svc") as twin_bus,
        MqttClient(url, client_id="twin-app") as app_bus,
        TwinService(
            bus=twin_bus,
            db_path=db,
            devices=devices,
            write_timeout=write_timeout,
            kubeedge=kubeedge,
        ) as twin,
        TwinClient(app_bus, name="app") as client,
    ):
        yield Running(twin, client, app_bus)
