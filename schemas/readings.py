"""Messages between devices (through their mappers) and the rest of the edge."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.base import JsonValue, Message, Name, now


class Quality(StrEnum):
    """OPC UA-style quality: a consumer must know a value is stale or suspect, not guess it."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class Reading(Message):
    """One value of one device property, as a mapper read it.

    `timestamp` is when the device was read; `published_at` is when the mapper sent it, so
    consumers can tell device latency from bus latency.
    """

    kind: Literal["reading"] = "reading"
    device: Name
    property: Name
    value: JsonValue
    quality: Quality = Quality.GOOD
    unit: str | None = None
    timestamp: float = Field(default_factory=now)
    published_at: float = Field(default_factory=now)


class DeviceState(StrEnum):
    """A device's link state as its mapper sees it."""

    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class DeviceStatus(Message):
    """Published (retained) on every change of a device's state, with the reason."""

    kind: Literal["device_status"] = "device_status"
    device: Name
    state: DeviceState
    reason: str = ""
    errors: int = 0
    timestamp: float = Field(default_factory=now)


class DeviceWrite(Message):
    """A request to a mapper to write property values to a device (sent by the twin).

    Carries `reply_to` and `correlation_id` in the body so the exchange works on MQTT 3.1.1,
    which has no response-topic property.
    """

    kind: Literal["device_write"] = "device_write"
    device: Name
    values: dict[Name, JsonValue]
    reply_to: str | None = None
    correlation_id: str | None = None
    timestamp: float = Field(default_factory=now)


class WriteErrorCode(StrEnum):
    """Why a property of a `DeviceWrite` was not written.

    `DeviceWriteResult.errors` values start with one of these, then ``": "`` and a detail.
    """

    REFUSED = "refused"
    """The device answered with an error (Modbus exception, OPC UA bad status, ATT error)."""
    READ_ONLY = "read_only"
    """The property is ReadOnly, or lives where the protocol cannot write (input register)."""
    OUT_OF_RANGE = "out_of_range"
    """Outside the property's min/max or what the device data type can hold."""
    INVALID_VALUE = "invalid_value"
    """The value cannot be converted to the property's type."""
    UNKNOWN_PROPERTY = "unknown_property"
    """The device has no such property."""
    TIMEOUT = "timeout"
    """The device did not answer in time."""
    UNAVAILABLE = "unavailable"
    """The device is not connected."""
    FAILED = "failed"
    """Anything else."""


class DeviceWriteResult(Message):
    """What the mapper did with a `DeviceWrite`: per property, the read-back value or the error."""

    kind: Literal["device_write_result"] = "device_write_result"
    device: Name
    correlation_id: str | None = None
    written: dict[Name, JsonValue] = Field(default_factory=dict)
    errors: dict[Name, str] = Field(default_factory=dict)
    timestamp: float = Field(default_factory=now)

    @property
    def ok(self) -> bool:
        """True when every requested property was written and read back."""
        return not self.errors

    def error_code(self, prop: str) -> WriteErrorCode | None:
        """The machine-readable reason `prop` was not written, or None if it was."""
        reason = self.errors.get(prop)
        if reason is None:
            return None
        code = reason.split(":", 1)[0]
        try:
            return WriteErrorCode(code)
        except ValueError:
            return WriteErrorCode.FAILED
