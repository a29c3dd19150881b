"""Model updates, model status and model commands (rollback).

A model update is a frame (`schemas.frames`): a `ModelUpdate` header and the ONNX bytes as the
body, never base64 in JSON. The header carries the size and SHA-256 of the body and, when the
cloud signs its models, an Ed25519 signature over (name, version, sha256) (`schemas.signing`);
the edge checks them before it loads anything. A frame larger than the NATS payload limit is
cut into chunks by the bridge and put back together before it is published on the edge's
broker, so the pipeline always receives the whole frame.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.base import JsonValue, Message, Name, now


class ModelUpdate(Message):
    """Header of a model update frame."""

    kind: Literal["model_update"] = "model_update"
    name: Name
    version: str = Field(min_length=1, max_length=64)
    sha256: str = Field(min_length=64, max_length=64)
    size: int = Field(ge=1)
    format: Literal["onnx"] = "onnx"
    signature: str | None = None
    metrics: dict[str, JsonValue] = Field(default_factory=dict)
    timestamp: float = Field(default_factory=now)


class ModelState(StrEnum):
    """What happened to the latest update of a model on this edge."""

    ACTIVE = "active"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"


class ModelStatus(Message):
    """Published retained on `topics.model_status(name)` after every change."""

    kind: Literal["model_status"] = "model_status"
    name: Name
    active_version: str
    previous_version: str | None = None
    state: ModelState
    reason: str = ""
    candidate_version: str | None = None
    swaps: int = 0
    correlation_id: str | None = Field(
        default=None, max_length=128, description="set when answering a ModelCommand"
    )
    timestamp: float = Field(default_factory=now)


class ModelCommand(Message):
    """An operator's command for a model on this edge (rollback to the previous version)."""

    kind: Literal["model_command"] = "model_command"
    name: Name
    action: Literal["rollback"] = "rollback"
    reply_to: str | None = None
    correlation_id: str | None = None
