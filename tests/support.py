"""Helpers for tests: waiting on conditions (never blind sleeps) and collecting messages."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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


async def wait_for_async(
    predicate: Callable[[], Awaitable[object]], timeout: float = 10.0, what: str = ""
) -> None:
    """`wait_for` for a condition that must be asked of a server (an awaitable predicate)."""
    try:
        async with asyncio.timeout(timeout):
            while not await predicate():
                await asyncio.sleep(0.05)
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


@contextlib.contextmanager
def tasks_dumped_after(seconds: float) -> Iterator[None]:
    """If the block is still running after `seconds`, print every asyncio task's stack.

    A hung async test is usually idle in `select`, awaiting something that will never come;
    pytest-timeout's thread dump shows only that, while the task stacks show what it awaits.
    The dump is scheduled from a timer thread onto the loop, which also wakes an idle loop.
    """
    loop = asyncio.get_running_loop()

    def dump() -> None:
        print(f"\n=== asyncio tasks still running after {seconds} s ===", file=sys.stderr)
        for task in asyncio.all_tasks(loop):
            print(f"--- {task.get_name()}: {task!r}", file=sys.stderr)
            task.print_stack(limit=30, file=sys.stderr)
        sys.stderr.flush()

    timer = threading.Timer(seconds, loop.call_soon_threadsafe, (dump,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
