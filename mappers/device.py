"""Device models and device instances as the mappers run them.

A *device model* says what a kind of device offers (property names, types, access modes,
ranges, units); a *device instance* says how to reach one device (protocol connection) and
where each property lives on it (a per-protocol *visitor*), with its collect and report
cycles. Both the native YAML format (`mappers.config`) and KubeEdge v1beta1 YAML
(`mappers.kubeedge`) end up as these models, so the drivers see one shape.

Cycles are milliseconds, as KubeEdge's mapper framework reads them.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mappers.ble.visitor import BleConnection, BleVisitor
from mappers.modbus.visitor import ModbusConnection, ModbusVisitor, RegisterType
from mappers.opcua.visitor import OpcUaConnection, OpcUaVisitor
from schemas.base import JsonValue, Name

DEFAULT_CYCLE_MS = 1000
ONE_DAY_MS = 24 * 3600 * 1000


class PropertyType(StrEnum):
    """Types of a device-model property (KubeEdge's names)."""

    INT = "int"
    FLOAT = "float"
    DOUBLE = "double"
    BOOLEAN = "boolean"
    STRING = "string"
    BYTES = "bytes"


class AccessMode(StrEnum):
    """Whether the edge may write a property."""

    READ_ONLY = "ReadOnly"
    READ_WRITE = "ReadWrite"


class Protocol(StrEnum):
    """Protocols edgefabric has mappers for."""

    MODBUS = "modbus"
    OPCUA = "opcua"
    BLUETOOTH = "bluetooth"


_CONFIG = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class PropertySpec(BaseModel):
    """One property of a device: its model part (type, access, range) and its visitor.

    `type=None` keeps the natural type of the decoded value (the walking skeleton's behaviour).
    Per-property cycles, when set, override the device's.
    """

    model_config = _CONFIG

    name: Name
    type: PropertyType | None = None
    access_mode: AccessMode = Field(default=AccessMode.READ_ONLY, alias="accessMode")
    minimum: float | None = Field(default=None, alias="min")
    maximum: float | None = Field(default=None, alias="max")
    unit: str | None = None
    description: str = ""
    collect_cycle_ms: int | None = Field(default=None, ge=1, alias="collectCycle")
    report_cycle_ms: int | None = Field(default=None, ge=1, alias="reportCycle")
    report_to_cloud: bool | None = Field(default=None, alias="reportToCloud")
    desired: JsonValue = None
    modbus: ModbusVisitor | None = None
    opcua: OpcUaVisitor | None = None
    bluetooth: BleVisitor | None = None

    @property
    def writable(self) -> bool:
        """True for ReadWrite properties."""
        return self.access_mode is AccessMode.READ_WRITE

    @model_validator(mode="after")
    def _range_is_ordered(self) -> Self:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"min {self.minimum} is greater than max {self.maximum}")
        return self


class DeviceInstance(BaseModel):
    """A device the edge talks to, with its properties and cycles.

    `report_cycle_ms=None` publishes every collected value; a longer report cycle publishes
    the latest value of each property once per report cycle (less bus traffic).
    """

    model_config = _CONFIG

    name: Name
    model: str | None = None
    protocol: Protocol = Protocol.MODBUS
    modbus: ModbusConnection | None = None
    opcua: OpcUaConnection | None = None
    bluetooth: BleConnection | None = None
    properties: list[PropertySpec] = Field(min_length=1)
    collect_cycle_ms: int = Field(default=DEFAULT_CYCLE_MS, ge=1, alias="collectCycle")
    report_cycle_ms: int | None = Field(default=None, ge=1, alias="reportCycle")
    report_to_cloud: bool = Field(default=False, alias="reportToCloud")

    @model_validator(mode="after")
    def _protocol_parts_present(self) -> Self:
        attr = _PROTOCOL_ATTR[self.protocol]
        if getattr(self, attr) is None:
            raise ValueError(f"protocol {self.protocol.value!r} needs a {attr!r} connection")
        seen: set[str] = set()
        for prop in self.properties:
            if prop.name in seen:
                raise ValueError(f"property {prop.name!r} is defined twice")
            seen.add(prop.name)
            if getattr(prop, attr) is None:
                raise ValueError(f"property {prop.name!r} has no {attr!r} visitor")
        return self

    def property(self, name: str) -> PropertySpec | None:
        """The property called `name`, or None."""
        return next((p for p in self.properties if p.name == name), None)

    def cycles_of(self, prop: PropertySpec) -> tuple[int, int | None]:
        """The (collect, report) cycles in ms that apply to `prop`."""
        collect = prop.collect_cycle_ms or self.collect_cycle_ms
        report = prop.report_cycle_ms or self.report_cycle_ms
        return collect, report


_PROTOCOL_ATTR: dict[Protocol, Literal["modbus", "opcua", "bluetooth"]] = {
    Protocol.MODBUS: "modbus",
    Protocol.OPCUA: "opcua",
    Protocol.BLUETOOTH: "bluetooth",
}


def load_devices(path: Path | str) -> list[DeviceInstance]:
    """Read a device file: native edgefabric YAML or KubeEdge v1beta1 (multi-document) YAML.

    Raises:
        DeviceConfigError: unreadable YAML or an invalid field (file and field in the message).

    """
    from mappers.config import load_device_file  # noqa: PLC0415 - config imports this module

    return load_device_file(Path(str(path)))


__all__ = [
    "AccessMode",
    "DeviceInstance",
    "ModbusConnection",
    "ModbusVisitor",
    "OpcUaConnection",
    "OpcUaVisitor",
    "PropertySpec",
    "PropertyType",
    "Protocol",
    "RegisterType",
    "load_devices",
]
