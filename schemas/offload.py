"""Inference offload: a phone or device sends a pre-processed image, the edge answers.

The request is a frame (`schemas.frames`): an `OffloadRequest` header and a tensor body
(`schemas.tensor`). The answer is an `OffloadResponse` (JSON). `reply_to` and `correlation_id`
travel in the header so the exchange works on MQTT 3.1.1; on MQTT 5 the response topic and
correlation data properties are honoured as well.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import Message, Name, now
from schemas.inference import JointAnswer


class OffloadRequest(Message):
    """Header of an offload request frame."""

    kind: Literal["offload_request"] = "offload_request"
    model: Name
    reply_to: str | None = Field(default=None, max_length=512)
    correlation_id: str | None = Field(default=None, max_length=128)
    timestamp: float = Field(default_factory=now)


OffloadErrorCode = Literal["bad_request", "unknown_model", "overloaded", "internal"]


class OffloadError(Message):
    """Why a request was refused (bad shape, dtype or size; unknown model; overload)."""

    kind: Literal["offload_error"] = "offload_error"
    code: OffloadErrorCode
    reason: str


class OffloadResponse(Message):
    """The edge's answer: the final label and confidence, and how it was reached."""

    kind: Literal["offload_response"] = "offload_response"
    model: Name
    correlation_id: str | None = None
    label: int | None = None
    confidence: float | None = None
    answer: JointAnswer | None = None
    error: OffloadError | None = None
    latency_ms: float = 0.0
    timestamp: float = Field(default_factory=now)
