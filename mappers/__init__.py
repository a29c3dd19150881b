"""Device mappers: speak each device's protocol and publish its readings on the local bus."""

from mappers.device import (
    AccessMode,
    DeviceInstance,
    ModbusConnection,
    ModbusVisitor,
    PropertySpec,
    PropertyType,
    Protocol,
    load_devices,
)
from mappers.errors import DeviceConfigError, DeviceUnavailable, MapperError
from mappers.runner import DeviceMapper
from mappers.service import MapperService, make_driver
from mappers.simulators.modbus_plc import ModbusPlcSimulator, RegisterKind

__all__ = [
    "AccessMode",
    "DeviceConfigError",
    "DeviceInstance",
    "DeviceMapper",
    "DeviceUnavailable",
    "MapperError",
    "MapperService",
    "ModbusConnection",
    "ModbusPlcSimulator",
    "ModbusVisitor",
    "PropertySpec",
    "PropertyType",
    "Protocol",
    "RegisterKind",
    "load_devices",
    "make_driver",
]
