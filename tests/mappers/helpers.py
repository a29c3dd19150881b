"""Shared helpers of the mapper tests: a bus client, a collector and a device factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from bus.mqtt import MqttClient
from bus.subscription import InboundMessage, Overflow
from mappers.device import DeviceInstance, PropertySpec
from mappers.modbus.visitor import ModbusConnection, ModbusVisitor
from schemas.codec import decode
from tests.support import wait_for

EXAMPLES = Path(__file__).parents[2] / "examples" / "devices"

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


def modbus_device(
    port: int, *props: tuple[str, dict[str, Any], dict[str, Any]], name: str = "plc", **kw: Any
) -> DeviceInstance:
    """A Modbus device on the simulator; each prop is (name, visitor kwargs, property kwargs)."""
    connection = ModbusConnection(
        port=port, timeout_s=0.5, backoff_initial_s=0.05, backoff_max_s=0.2
    )
    return DeviceInstance(
        name=name,
        modbus=connection,
        properties=[
            PropertySpec(name=n, modbus=ModbusVisitor(**visitor), **spec)
            for n, visitor, spec in props
        ],
        **kw,
    )
