"""Device mappers: speak each device's protocol and publish its readings on the local bus."""

from mappers.device import DeviceInstance, load_devices
from mappers.errors import DeviceConfigError, DeviceUnavailable, MapperError
from mappers.service import MapperService
from mappers.simulators.modbus_plc import ModbusPlcSimulator, RegisterKind

__all__ = [
    "DeviceConfigError",
    "DeviceInstance",
    "DeviceUnavailable",
    "MapperError",
    "MapperService",
    "ModbusPlcSimulator",
    "RegisterKind",
    "load_devices",
]
