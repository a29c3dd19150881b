"""KubeEdge's device-twin message shapes (edgecore's ``dtclient``/``dttype``), as JSON models.

Foreign wire formats, kept beside the adapter rather than in `schemas/`: they carry no
edgefabric schema version or message id, and unknown fields are ignored, as KubeEdge's Go
decoder does. Timestamps are Unix *milliseconds*; values are strings in KubeEdge (the adapter
also accepts any JSON value there, and converts with the device model's type).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import JsonValue


class _Ke(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ValueMetadata(_Ke):
    """``{"timestamp": ms}``."""

    timestamp: int | None = None


class TypeMetadata(_Ke):
    """``{"type": "int"}``."""

    type: str | None = None


class TwinVersion(_Ke):
    """``{"cloud": n, "edge": n}``."""

    cloud: int = 0
    edge: int = 0


class TwinValue(_Ke):
    """``{"value": "...", "metadata": {"timestamp": ms}}``."""

    value: JsonValue = None
    metadata: ValueMetadata | None = None


class MsgTwin(_Ke):
    """One property of a KubeEdge twin: expected (desired) and actual (reported) sides."""

    expected: TwinValue | None = None
    actual: TwinValue | None = None
    optional: bool | None = None
    metadata: TypeMetadata | None = None
    expected_version: TwinVersion | None = None
    actual_version: TwinVersion | None = None


class BaseMessage(_Ke):
    """``event_id`` and ``timestamp`` (ms) on every KubeEdge event."""

    event_id: str = ""
    timestamp: int = 0


class DeviceTwinUpdate(BaseMessage):
    """``$hw/events/device/{id}/twin/update`` (and the shape of ``.../update/result``)."""

    twin: dict[str, MsgTwin] = Field(default_factory=dict)


class DeviceTwinResult(BaseMessage):
    """``$hw/events/device/{id}/twin/get/result``."""

    twin: dict[str, MsgTwin] = Field(default_factory=dict)


class DeviceTwinDelta(BaseMessage):
    """``$hw/events/device/{id}/twin/update/delta``: the twin and expected values not yet actual."""

    twin: dict[str, MsgTwin] = Field(default_factory=dict)
    delta: dict[str, str] = Field(default_factory=dict)


class DeviceStateUpdate(BaseMessage):
    """``$hw/events/device/{id}/state/update``."""

    state: str = ""
