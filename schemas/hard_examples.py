"""Hard examples: samples the edge model was unsure of, carried to the cloud for labelling.

A hard example is a frame (`schemas.frames`): a `HardExample` header and the input tensor as
the body (`schemas.tensor`). `dedupe_key` (SHA-256 of the tensor bytes) lets both the edge's
budget and the cloud's store drop repeats.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import Message, Name, now
from schemas.inference import Prediction


class HardExample(Message):
    """Header of a hard-example frame."""

    kind: Literal["hard_example"] = "hard_example"
    pipeline: Name
    model: Name
    model_version: str
    reason: str
    edge_result: Prediction
    cloud_result: Prediction | None = None
    dedupe_key: str = Field(min_length=64, max_length=64)
    timestamp: float = Field(default_factory=now)
