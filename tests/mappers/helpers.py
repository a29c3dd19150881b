"""Shared helpers of the mapper tests: a bus client, a collector and a device factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mappers.device import DeviceInstance, PropertySpec
from mappers.modbus.visitor import ModbusConnection, ModbusVisitor

EXAMPLES = Path(__file__).parents[2] / "examples" / "devices"


def modbus_device(
    port: int, *props: tuple[str, dict[str, Any], dict[str, Any]], name: str = "plc", **kw: Any
) -> DeviceInstance:
    """A Modbus device on the simulator; each prop is (name, visitor kwargs, property kwargs)."""
    connection = ModbusConnection(
        port=port, timeout_s=0.5, backoff_initial_s=0.05, backoff_max_s=0.2
    )
    return DeviceInstance(
        name=name,
        modbus=connection,
        properties=[
            PropertySpec(name=n, modbus=ModbusVisitor(**visitor), **spec)
            for n, visitor, spec in props
        ],
        **kw,
    )
