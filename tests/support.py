"""Helpers for tests: waiting on conditions (never blind sleeps) and collecting messages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from pydantic import BaseModel

from bus.mqtt import MqttClient
from bus.subscription import InboundMessage, Overflow
from schemas.codec import decode


async def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> None:
    """Wait until `predicate()` is truthy; fail the test with a clear message on timeout."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(interval)
    except TimeoutError:
        pytest.fail(f"condition not met within {timeout} s: {what or predicate}")


M = TypeVar("M", bound=BaseModel)


@dataclass
class Collected:
    """Messages received on one filter, in order."""

    messages: list[InboundMessage] = field(default_factory=list)

    def decoded(self, model: type[M]) -> list[M]:
        return [decode(model, m.payload) for m in self.messages]

    async def wait(self, predicate: Callable[[list[InboundMessage]], object], what: str) -> None:
        await wait_for(lambda: predicate(self.messages), timeout=10, what=what)


@contextlib.asynccontextmanager
async def collect(bus: MqttClient, topic_filter: str) -> AsyncIterator[Collected]:
    """Collect everything on `topic_filter` while the block runs."""
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
