"""Device-twin messages: the document, desired updates, deltas, get and errors.

Versions follow KubeEdge's twin: each side of each property (desired, reported) carries a
`TwinVersion` with an *edge* and a *cloud* counter, bumped by whichever side made the change, so
a cloud update built on an old view of the edge is detected instead of silently winning (the
reconciliation policy is in docs/twin.md). On top of that every device has one `desired_version`
that counts accepted desired changes: it is what a client passes as `expected_version` for an
optimistic-concurrency update (readings never bump it, so a busy sensor causes no conflicts).

Values are any JSON value (objects, lists, strings with spaces or quotes), unlike KubeEdge's
string-only twin; the KubeEdge adapter converts at its boundary.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import JsonValue, Message, Name, now
from schemas.readings import DeviceState


class TwinSource(StrEnum):
    """Who set a desired value: decides which version counter moves (cloud vs edge)."""

    APP = "app"
    """A local application on the edge's broker (counts as an edge change)."""
    EDGE = "edge"
    """The edge itself, e.g. its CLI or a local controller."""
    CLOUD = "cloud"
    """The cloud, through the bridge's downlink."""


class TwinErrorCode(StrEnum):
    """Why an update was refused or a desired value did not reach the device."""

    CONFLICT = "conflict"
    """`expected_version` was stale, or a cloud update lost to a newer edge change."""
    VALIDATION = "validation"
    """Unknown property, wrong type, out of range, or a ReadOnly property."""
    REFUSED = "refused"
    """The mapper or the device refused the write (reason says why)."""
    TIMEOUT = "timeout"
    """No write result from the mapper within the twin's write timeout."""


def values_match(desired: JsonValue, reported: JsonValue) -> bool:
    """True when a reported value satisfies a desired one.

    Numbers compare with a relative tolerance of 1e-9: a scaled register read back as
    ``103 * 0.1 = 10.300000000000001`` does satisfy a desired 10.3. Booleans are not numbers
    here, and containers compare element by element.
    """
    if isinstance(desired, bool) or isinstance(reported, bool):
        return desired is reported
    if isinstance(desired, int | float) and isinstance(reported, int | float):
        return math.isclose(desired, reported, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(desired, list) and isinstance(reported, list):
        return len(desired) == len(reported) and all(
            values_match(d, r) for d, r in zip(desired, reported, strict=True)
        )
    if isinstance(desired, dict) and isinstance(reported, dict):
        return desired.keys() == reported.keys() and all(
            values_match(v, reported[k]) for k, v in desired.items()
        )
    return bool(desired == reported)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TwinVersion(_Frozen):
    """KubeEdge-style version counters of one side of one property."""

    edge: int = Field(default=0, ge=0)
    cloud: int = Field(default=0, ge=0)

    @property
    def total(self) -> int:
        """Changes made on both sides together."""
        return self.edge + self.cloud


class TwinValue(_Frozen):
    """One side (desired or reported) of one property: value, metadata and version."""

    value: JsonValue
    timestamp: float
    version: TwinVersion = TwinVersion()
    source: TwinSource | None = None


class WriteState(StrEnum):
    """Where the last device write of a property stands."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class WriteStatus(_Frozen):
    """The outcome of the last write of a desired value, kept on the twin with its reason."""

    state: WriteState
    code: TwinErrorCode | None = None
    reason: str = ""
    timestamp: float


class TwinProperty(_Frozen):
    """Desired and reported sides of one property, its type and the last write's outcome."""

    type: str | None = None
    desired: TwinValue | None = None
    reported: TwinValue | None = None
    write: WriteStatus | None = None

    @property
    def in_delta(self) -> bool:
        """True when a desired value exists and the device does not report it (yet)."""
        if self.desired is None:
            return False
        return self.reported is None or not values_match(self.desired.value, self.reported.value)


class TwinDocument(Message):
    """Everything the edge knows about one device, published retained on every change."""

    kind: Literal["twin_document"] = "twin_document"
    device: Name
    properties: dict[Name, TwinProperty] = Field(default_factory=dict)
    desired_version: int = Field(default=0, ge=0)
    state: DeviceState | None = None
    state_reason: str = ""
    timestamp: float = Field(default_factory=now)

    def delta(self) -> dict[str, JsonValue]:
        """Desired values the device does not report yet, by property."""
        return {
            name: prop.desired.value
            for name, prop in self.properties.items()
            if prop.in_delta and prop.desired is not None
        }


class TwinDesiredSet(Message):
    """Set desired values of one device.

    `expected_version` (optional) is the `desired_version` the sender last saw: when another
    update came in between, the set is refused with a CONFLICT error instead of overwriting it.
    `base_versions` is what a cloud update carries: the desired versions per property it was
    built on, so the edge can tell a concurrent offline edit (see docs/twin.md). A None value
    clears the desired value of that property.
    `reply_to` and `correlation_id` travel in the body for MQTT 3.1.1 clients.
    """

    kind: Literal["twin_desired_set"] = "twin_desired_set"
    device: Name
    values: dict[Name, JsonValue] = Field(min_length=1)
    expected_version: int | None = Field(default=None, ge=0)
    base_versions: dict[Name, TwinVersion] = Field(default_factory=dict)
    source: TwinSource = TwinSource.APP
    reply_to: str | None = None
    correlation_id: str | None = None
    timestamp: float = Field(default_factory=now)


class TwinError(Message):
    """A refused update or a failed device write, with the machine code and the reason."""

    kind: Literal["twin_error"] = "twin_error"
    device: Name
    code: TwinErrorCode
    reason: str
    properties: dict[Name, str] = Field(default_factory=dict)
    correlation_id: str | None = None
    timestamp: float = Field(default_factory=now)


class TwinSetResult(Message):
    """Reply to a `TwinDesiredSet`: sent only after the update is durable on disk."""

    kind: Literal["twin_set_result"] = "twin_set_result"
    device: Name
    correlation_id: str | None = None
    ok: bool
    desired_version: int = Field(default=0, ge=0)
    error: TwinError | None = None
    timestamp: float = Field(default_factory=now)


class TwinDelta(Message):
    """Desired values that differ from reported, published on every twin change (even empty)."""

    kind: Literal["twin_delta"] = "twin_delta"
    device: Name
    delta: dict[Name, JsonValue] = Field(default_factory=dict)
    desired_version: int = Field(default=0, ge=0)
    timestamp: float = Field(default_factory=now)


class TwinGetRequest(Message):
    """Ask for a device's document; the reply goes to `reply_to` or the v5 response topic."""

    kind: Literal["twin_get_request"] = "twin_get_request"
    device: Name
    reply_to: str | None = None
    correlation_id: str | None = None


class TwinGetResponse(Message):
    """The document asked for (empty properties when the twin has never seen the device)."""

    kind: Literal["twin_get_response"] = "twin_get_response"
    device: Name
    correlation_id: str | None = None
    document: TwinDocument
