"""The Modbus mapper: the shared runtime driving a `ModbusDriver`."""

from __future__ import annotations

from bus.mqtt import MqttClient
from mappers.device import DeviceInstance
from mappers.modbus.driver import ModbusDriver
from mappers.runner import DeviceMapper


class ModbusMapper(DeviceMapper):
    """One Modbus device's mapper (kept for callers of the walking skeleton)."""

    def __init__(self, device: DeviceInstance, *, bus: MqttClient) -> None:
        super().__init__(device, ModbusDriver(device), bus=bus)
