"""Publishes hard examples for the bridge to carry up, within an upload budget.

The uplink is metered: a budget per minute (count and bytes) caps what one pipeline may send,
and a bounded memory of recent SHA-256 keys drops repeats (the same image offloaded twice).
What is dropped is counted, never silently: the counters are in the pipeline's status.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from bus.mqtt import MqttClient
from schemas import topics
from schemas.frames import pack
from schemas.hard_examples import HardExample
from schemas.inference import Prediction
from schemas.tensor import encode_tensor


class HardExampleBudget(BaseModel):
    """Upload budget of one pipeline's hard examples."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_minute: int = Field(default=120, ge=0)
    bytes_per_minute: int = Field(default=2 * 1024 * 1024, ge=0)
    dedupe_window: int = Field(default=10_000, ge=1, description="recent keys remembered")


@dataclass
class HardExampleCounters:
    """What happened to the hard examples offered."""

    published: int = 0
    over_budget: int = 0
    duplicates: int = 0


class HardExamplePublisher:
    """Frames and publishes hard examples on `topics.hard_examples(pipeline)`."""

    def __init__(
        self,
        bus: MqttClient,
        *,
        pipeline: str,
        budget: HardExampleBudget,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._topic = topics.hard_examples(pipeline)
        self.pipeline = pipeline
        self.budget = budget
        self._clock = clock
        self._sent: deque[tuple[float, int]] = deque()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.counters = HardExampleCounters()

    def _admit(self, key: str, size: int) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            self.counters.duplicates += 1
            return False
        now = self._clock()
        while self._sent and now - self._sent[0][0] >= 60.0:
            self._sent.popleft()
        used = sum(n for _, n in self._sent)
        if len(self._sent) >= self.budget.per_minute or used + size > self.budget.bytes_per_minute:
            self.counters.over_budget += 1
            return False
        self._sent.append((now, size))
        self._seen[key] = None
        if len(self._seen) > self.budget.dedupe_window:
            self._seen.popitem(last=False)
        return True

    async def offer(
        self,
        sample: NDArray[np.float32],
        *,
        model: str,
        edge_result: Prediction,
        cloud_result: Prediction | None,
        reason: str,
    ) -> bool:
        """Publish `sample` as a hard example if the budget allows; True when published."""
        body = encode_tensor(np.ascontiguousarray(sample, dtype=np.float32))
        key = hashlib.sha256(body).hexdigest()
        if not self._admit(key, len(body)):
            return False
        header = HardExample(
            pipeline=self.pipeline,
            model=model,
            model_version=edge_result.model_version,
            reason=reason,
            edge_result=edge_result,
            cloud_result=cloud_result,
            dedupe_key=key,
        )
        await self._bus.publish(self._topic, pack(header, body))
        self.counters.published += 1
        return True
