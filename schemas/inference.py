"""Messages produced by inference pipelines."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import JsonValue, Message, Name, now


class InferenceResult(Message):
    """A model's answer for one window of readings.

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


class Prediction(BaseModel):
    """One model's answer to one sample: the label, its confidence, all class scores."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: int
    confidence: float = Field(ge=0.0, le=1.0)
    probabilities: list[float] = Field(default_factory=list, max_length=1000)
    model_version: str = ""


class JointAnswer(BaseModel):
    """Sedna's joint inference answer: ``[is_hard_example, final, edge, cloud]``, named.

    `cloud_result` is None when the sample was not hard, or when the cloud was slow, gone or
    refused by the circuit breaker; `cloud_skipped` says which.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    is_hard_example: bool
    final_result: Prediction
    edge_result: Prediction
    cloud_result: Prediction | None = None
    cloud_skipped: str | None = None
    hard_reason: str | None = None
