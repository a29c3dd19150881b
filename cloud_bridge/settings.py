"""Configuration of the cloud bridge (edge side) and of the cloud streams."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bus import nats_server
from schemas.base import Name
from schemas.topics import TrafficClass

CLOUD_STREAM = "EF_UP"
DOWNLINK_STREAM = nats_server.DOWNLINK_STREAM
PRIORITY: tuple[TrafficClass, ...] = (
    TrafficClass.CONTROL,
    TrafficClass.TWIN,
    TrafficClass.RESULTS,
    TrafficClass.HARD_EXAMPLES,
)
"""Drain order: a higher class is always emptied before a lower one is read."""


def edge_stream(traffic_class: TrafficClass) -> str:
    """Name of the edge-local stream that queues one traffic class (``EF_OUT_HARD_EXAMPLES``)."""
    return "EF_OUT_" + traffic_class.name


class ClassLimits(BaseModel):
    """Budget of one class's edge queue and what happens when it is reached.

    `drop_oldest` False means the class is never dropped: when full, the bridge stops
    acknowledging MQTT, so the broker (and then the producers) hold the backlog.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(default=256 << 20, ge=1 << 20)
    max_age_s: float = Field(default=7 * 24 * 3600, gt=0)
    drop_oldest: bool = True


def _default_limits() -> dict[TrafficClass, ClassLimits]:
    return {
        TrafficClass.CONTROL: ClassLimits(max_bytes=64 << 20, drop_oldest=False),
        TrafficClass.TWIN: ClassLimits(max_bytes=128 << 20),
        TrafficClass.RESULTS: ClassLimits(max_bytes=256 << 20),
        TrafficClass.HARD_EXAMPLES: ClassLimits(max_bytes=512 << 20),
    }


class BridgeSettings(BaseModel):
    """How the edge's bridge queues and forwards.

    `max_bytes` is the total disk budget of the edge queues; each class gets its own budget in
    `limits` (scaled down to fit `max_bytes` when they add up to more). An outage of any length
    within a class's budget loses nothing. `publish_timeout_s` bounds each cloud publish; a
    timed-out publish is retried with the same `Nats-Msg-Id`, since JetStream may have stored it.
    `bulk_bytes_per_s` caps the uplink bandwidth of the `bulk` classes (0 = no cap).
    `max_payload_bytes` is the largest payload the bridge stores: a bigger one is
    dead-lettered (``ef/dead-letter/bridge``) before it touches the queues, so one message can
    never evict a class's backlog (at most 64 MiB, half the MQTT client's largest packet).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    edge_id: Name
    leaf_url: str = "nats://127.0.0.1:4222"
    leaf_user: str | None = None
    leaf_password: str | None = None
    max_bytes: int = Field(default=1 << 30, ge=4 << 20)
    limits: dict[TrafficClass, ClassLimits] = Field(default_factory=_default_limits)
    batch: int = Field(default=512, ge=1, le=10_000)
    publish_timeout_s: float = Field(default=2.0, gt=0)
    retry_backoff_max_s: float = Field(default=0.5, gt=0)
    probe_interval_s: float = Field(default=1.0, gt=0)
    probe_timeout_s: float = Field(default=1.0, gt=0)
    status_interval_s: float = Field(default=2.0, gt=0)
    bulk: frozenset[TrafficClass] = frozenset({TrafficClass.HARD_EXAMPLES})
    bulk_bytes_per_s: int = Field(default=0, ge=0)
    chunk_bytes: int = Field(default=512 << 10, ge=1024, le=900 << 10)
    max_payload_bytes: int = Field(default=16 << 20, ge=1024, le=64 << 20)
    duplicate_window_s: float = Field(default=600, gt=0)

    def limits_of(self, traffic_class: TrafficClass) -> ClassLimits:
        """The class's limits, scaled so all classes together fit in `max_bytes`."""
        limits = self.limits.get(traffic_class, ClassLimits())
        total = sum(self.limits.get(c, ClassLimits()).max_bytes for c in PRIORITY)
        if total <= self.max_bytes:
            return limits
        scaled = max(1 << 20, limits.max_bytes * self.max_bytes // total)
        return limits.model_copy(update={"max_bytes": scaled})


class CloudStreamSettings(BaseModel):
    """The hub's uplink stream that cloud services consume."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(default=10 << 30, ge=1 << 20)
    duplicate_window_s: float = Field(default=600, gt=0)
    replicas: int = Field(default=1, ge=1, le=5)
