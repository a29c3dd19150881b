"""Configuration of the cloud bridge (edge side) and of the cloud streams."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Name

EDGE_STREAM = "EF_OUT"
CLOUD_STREAM = "EF_UP"


class BridgeSettings(BaseModel):
    """How the edge's bridge queues and forwards.

    `max_bytes` is the disk budget of the edge queue: an outage of any length within it loses
    nothing. `publish_timeout_s` bounds each cloud publish; a timed-out publish is retried with
    the same `Nats-Msg-Id`, since JetStream may have stored it anyway.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    edge_id: Name
    leaf_url: str = "nats://127.0.0.1:4222"
    max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    max_age_s: float = Field(default=7 * 24 * 3600, gt=0)
    batch: int = Field(default=512, ge=1, le=10_000)
    publish_timeout_s: float = Field(default=2.0, gt=0)
    retry_backoff_max_s: float = Field(default=1.0, gt=0)


class CloudStreamSettings(BaseModel):
    """The hub's uplink stream that cloud services consume."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(default=10 << 30, ge=1 << 20)
    duplicate_window_s: float = Field(default=600, gt=0)
