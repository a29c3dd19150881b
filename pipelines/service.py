"""All streaming pipelines of an edge, run together."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from bus.lifecycle import ContextGroup
from bus.mqtt import MqttClient
from pipelines.model_slot import ModelSlot
from pipelines.settings import PipelinesSettings
from pipelines.streaming import StreamingPipeline


class PipelineService:
    """Starts every configured streaming pipeline on one bus connection.

    Pipelines naming the same `model_name` share one model slot, so one model update
    reaches all of them at once.
    """

    def __init__(self, settings: PipelinesSettings, *, bus: MqttClient) -> None:
        self.streaming: list[StreamingPipeline] = []
        self.slots: dict[str, ModelSlot] = {}
        for s in settings.streaming:
            pipeline = StreamingPipeline(s, bus=bus, slot=self.slots.get(s.model_name))
            self.slots.setdefault(s.model_name, pipeline.slot)
            self.streaming.append(pipeline)
        self._parts = ContextGroup(self.streaming)

    @property
    def results(self) -> int:
        """Results published since start."""
        return sum(p.results for p in self.streaming)

    async def __aenter__(self) -> Self:
        await self._parts.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._parts.__aexit__(exc_type, exc, tb)
