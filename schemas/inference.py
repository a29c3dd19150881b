"""Messages produced by inference pipelines."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import JsonValue, Message, Name, now


class InferenceResult(Message):
    """A model's answer for one window of readings (or one offloaded request).

    `source_timestamp` is the device read time of the newest reading in the window, so the
    device-to-result latency can be measured anywhere downstream, the cloud included.
    """

    kind: Literal["inference_result"] = "inference_result"
    pipeline: Name
    device: Name
    model: Name
    model_version: str
    outputs: dict[str, JsonValue]
    label: str | None = None
    score: float | None = None
    source_timestamp: float
    timestamp: float = Field(default_factory=now)
