"""Device instances as the mappers run them (native edgefabric format).

This is the walking-skeleton subset: a Modbus TCP device with holding/input registers and a
scale. The mappers issue extends it with the full device model, every protocol and the
KubeEdge v1beta1 reader.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mappers.errors import DeviceConfigError
from schemas.base import Name


class RegisterType(StrEnum):
    """Modbus tables, named as KubeEdge names them."""

    COIL = "CoilRegister"
    DISCRETE_INPUT = "DiscreteInputRegister"
    HOLDING = "HoldingRegister"
    INPUT = "InputRegister"


class ModbusVisitor(BaseModel):
    """Where one property lives on a Modbus device and how to turn registers into a value."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # "register" is KubeEdge's key, but it would shadow a BaseModel attribute.
    register_type: RegisterType = Field(default=RegisterType.HOLDING, alias="register")
    offset: int = Field(ge=0, le=65535)
    limit: int = Field(default=1, ge=1, le=125)
    scale: float = 1.0
    signed: bool = True


class PropertySpec(BaseModel):
    """One property of a device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    unit: str | None = None
    modbus: ModbusVisitor


class ModbusConnection(BaseModel):
    """How to reach a Modbus TCP device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)
    slave_id: int = Field(default=1, ge=0, le=247)
    timeout_s: float = Field(default=1.0, gt=0)


class DeviceInstance(BaseModel):
    """A device the edge talks to, with its properties and cycles."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    protocol: Literal["modbus"] = "modbus"
    modbus: ModbusConnection
    properties: list[PropertySpec] = Field(min_length=1)
    collect_cycle_ms: int = Field(default=1000, ge=1)


class DeviceFile(BaseModel):
    """The top level of a native device file: a list of devices."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    devices: list[DeviceInstance]


def load_devices(path: Path) -> list[DeviceInstance]:
    """Read a device file.

    Raises:
        DeviceConfigError: unreadable YAML or an invalid field (named in the message).

    """
    try:
        raw = yaml.safe_load(path.read_text())
        return DeviceFile.model_validate(raw).devices
    except (OSError, yaml.YAMLError) as exc:
        raise DeviceConfigError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DeviceConfigError(f"{path}: {where}: {first['msg']}") from exc
