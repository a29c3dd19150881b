"""What the cloud bridge reports about itself: link state, queue depth per class, lag."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Message, Name, now


class LinkState(StrEnum):
    """The bridge's view of the uplink, from its own probe through the leaf to the hub."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class ClassStatus(BaseModel):
    """One traffic class's edge queue.

    `dropped` counts messages the class's limits evicted before they were forwarded (only the
    classes whose policy allows it: hard examples first; control never).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    queued: int = Field(ge=0, description="messages stored on the edge, not yet in the cloud")
    queued_bytes: int = Field(ge=0)
    forwarded: int = Field(ge=0)
    dropped: int = Field(ge=0)
    lag_s: float = Field(ge=0, description="age of the oldest message not yet forwarded")


class BridgeStatus(Message):
    """Published retained on `topics.bridge_status()` every status period and on link change."""

    kind: Literal["bridge_status"] = "bridge_status"
    edge: Name
    link: LinkState
    link_changed_at: float
    classes: dict[str, ClassStatus]
    ingested: int = Field(ge=0)
    forwarded: int = Field(ge=0)
    rejected: int = Field(ge=0)
    timestamp: float = Field(default_factory=now)

    @property
    def queued(self) -> int:
        """Messages waiting on the edge over all classes."""
        return sum(c.queued for c in self.classes.values())
