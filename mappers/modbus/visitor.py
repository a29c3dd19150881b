"""Where a property lives on a Modbus device, and how to reach the device."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

_CONFIG = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

MAX_REGISTERS_PER_READ = 125
"""Modbus application protocol v1.1b3, 6.3: a read of holding/input registers is <= 125."""
MAX_BITS_PER_READ = 2000
"""Same spec, 6.1/6.2: a read of coils/discrete inputs is <= 2000 bits."""


class RegisterType(StrEnum):
    """Modbus tables, named as KubeEdge names them."""

    COIL = "CoilRegister"
    DISCRETE_INPUT = "DiscreteInputRegister"
    HOLDING = "HoldingRegister"
    INPUT = "InputRegister"

    @property
    def is_bits(self) -> bool:
        """Coils and discrete inputs hold bits; the others 16-bit registers."""
        return self in (RegisterType.COIL, RegisterType.DISCRETE_INPUT)

    @property
    def is_writable(self) -> bool:
        """Only coils and holding registers can be written (function codes 5/6/15/16)."""
        return self in (RegisterType.COIL, RegisterType.HOLDING)


class ModbusDataType(StrEnum):
    """How the registers of one property encode its value."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BOOLEAN = "boolean"
    STRING = "string"


_WIDTH = {
    ModbusDataType.INT16: 1,
    ModbusDataType.UINT16: 1,
    ModbusDataType.INT32: 2,
    ModbusDataType.UINT32: 2,
    ModbusDataType.INT64: 4,
    ModbusDataType.UINT64: 4,
    ModbusDataType.FLOAT32: 2,
    ModbusDataType.FLOAT64: 4,
    ModbusDataType.BOOLEAN: 1,
}

# KubeEdge's visitor dataType is the model type ("int", "float"...); map it to a width.
_KUBEEDGE_TYPES = {
    "int": None,  # decided by `limit` (1 -> int16, 2 -> int32, 4 -> int64)
    "float": ModbusDataType.FLOAT32,
    "double": ModbusDataType.FLOAT64,
    "boolean": ModbusDataType.BOOLEAN,
    "bool": ModbusDataType.BOOLEAN,
    "string": ModbusDataType.STRING,
}


class ModbusVisitor(BaseModel):
    """Where one property lives on a Modbus device and how to turn registers into a value.

    Value = decoded registers * `scale` + `value_offset`; writes apply the inverse. `is_swap`
    swaps the two bytes of every register, `is_register_swap` reverses the word order
    (KubeEdge's isSwap / isRegisterSwap); both default to big-endian, high word first.
    `signed` is the skeleton's switch and only applies when `data_type` is not given.
    """

    model_config = _CONFIG

    # "register" is KubeEdge's key, but it would shadow a BaseModel attribute.
    register_type: RegisterType = Field(default=RegisterType.HOLDING, alias="register")
    offset: int = Field(ge=0, le=65535)
    limit: int | None = Field(default=None, ge=1, le=MAX_REGISTERS_PER_READ)
    data_type: ModbusDataType | None = Field(default=None, alias="dataType")
    scale: float = 1.0
    value_offset: float = Field(default=0.0, alias="valueOffset")
    is_swap: bool = Field(default=False, alias="isSwap")
    is_register_swap: bool = Field(default=False, alias="isRegisterSwap")
    signed: bool = True

    @model_validator(mode="before")
    @classmethod
    def _kubeedge_data_type(cls, data: object) -> object:
        if isinstance(data, dict):
            raw = data.get("dataType", data.get("data_type"))
            if isinstance(raw, str) and raw.lower() in _KUBEEDGE_TYPES:
                mapped = _KUBEEDGE_TYPES[raw.lower()]
                data = {k: v for k, v in data.items() if k not in ("dataType", "data_type")}
                if mapped is not None:
                    data["data_type"] = mapped
        return data

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.effective_type is ModbusDataType.STRING and self.limit is None:
            raise ValueError("a string needs 'limit' (registers, 2 characters each)")
        if self.register_type.is_bits and self.effective_type is not ModbusDataType.BOOLEAN:
            raise ValueError(f"{self.register_type.value} holds bits: dataType must be boolean")
        if self.offset + self.count > 65536:
            raise ValueError("offset + registers goes past address 65535")
        return self

    @property
    def effective_type(self) -> ModbusDataType:
        """The data type, inferred from the register kind and `limit` when not given."""
        if self.data_type is not None:
            return self.data_type
        if self.register_type.is_bits:
            return ModbusDataType.BOOLEAN
        by_limit = {2: ("int32", "uint32"), 4: ("int64", "uint64")}
        signed, unsigned = by_limit.get(self.limit or 1, ("int16", "uint16"))
        return ModbusDataType(signed if self.signed else unsigned)

    @property
    def count(self) -> int:
        """How many registers (or bits) the property occupies."""
        kind = self.effective_type
        if self.register_type.is_bits:
            return self.limit or 1
        if kind is ModbusDataType.STRING:
            return self.limit or 1
        return _WIDTH[kind]


class ModbusConnection(BaseModel):
    """How to reach a Modbus device: TCP (host/port) or RTU over a serial port.

    `merge_reads` lets the mapper read adjacent properties in one request (at most 125
    registers or 2000 bits); `merge_gap` also bridges holes of up to that many unused
    registers (0 by default: some devices refuse reads of unmapped addresses).
    """

    model_config = _CONFIG

    mode: str = Field(default="TCP", alias="communicateMode", pattern="^(TCP|RTU|tcp|rtu)$")
    host: str = Field(default="127.0.0.1", alias="ip")
    port: int = Field(default=502, ge=1, le=65535)
    serial_port: str | None = Field(default=None, alias="serialPort")
    baudrate: int = Field(default=19200, ge=1, alias="baudRate")
    bytesize: int = Field(default=8, ge=5, le=8, alias="dataBits")
    parity: str = Field(default="N", pattern="^[NEO]$")
    stopbits: int = Field(default=1, ge=1, le=2, alias="stopBits")
    slave_id: int = Field(default=1, ge=0, le=247, alias="slaveID")
    timeout_s: float = Field(default=1.0, gt=0)
    merge_reads: bool = True
    merge_gap: int = Field(default=0, ge=0, le=124)
    backoff_initial_s: float = Field(default=0.1, gt=0)
    backoff_max_s: float = Field(default=5.0, gt=0)

    @property
    def is_rtu(self) -> bool:
        """True for RTU over a serial port."""
        return self.mode.upper() == "RTU"

    @model_validator(mode="after")
    def _serial_port_for_rtu(self) -> Self:
        if self.is_rtu and not self.serial_port:
            raise ValueError("communicateMode RTU needs 'serial_port' (e.g. /dev/ttyUSB0)")
        return self
