"""Where a property lives on a Bluetooth LE peripheral, and how to find the peripheral."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

_CONFIG = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Operation(StrEnum):
    """Arithmetic steps of KubeEdge's Bluetooth data converter."""

    ADD = "Add"
    SUBTRACT = "Subtract"
    MULTIPLY = "Multiply"
    DIVIDE = "Divide"


class OperationStep(BaseModel):
    """One step of `orderOfOperations`."""

    model_config = _CONFIG

    operation_type: Operation = Field(alias="operationType")
    operation_value: float = Field(alias="operationValue")

    @model_validator(mode="after")
    def _no_division_by_zero(self) -> Self:
        if self.operation_type is Operation.DIVIDE and self.operation_value == 0:
            raise ValueError("Divide by 0")
        return self


class DataConverter(BaseModel):
    """KubeEdge's converter: bytes[start..end] -> integer, shifted, then arithmetic in order.

    Unlike KubeEdge's (which joins bytes as decimal strings), bytes are joined with a real
    byte order: `byte_order` big or little, and `signed` two's complement.
    """

    model_config = _CONFIG

    start_index: int = Field(default=0, ge=0, alias="startIndex")
    end_index: int | None = Field(default=None, ge=0, alias="endIndex")
    shift_left: int = Field(default=0, ge=0, le=63, alias="shiftLeft")
    shift_right: int = Field(default=0, ge=0, le=63, alias="shiftRight")
    order_of_operations: list[OperationStep] = Field(
        default_factory=list, alias="orderOfOperations"
    )
    byte_order: str = Field(default="big", pattern="^(big|little)$", alias="byteOrder")
    signed: bool = False

    @model_validator(mode="after")
    def _indices_ordered(self) -> Self:
        if self.end_index is not None and self.end_index < self.start_index:
            raise ValueError("endIndex is before startIndex")
        return self


class BleVisitor(BaseModel):
    """One property's characteristic and how to turn its bytes into a value."""

    model_config = _CONFIG

    characteristic_uuid: str = Field(alias="characteristicUUID", min_length=4)
    data_converter: DataConverter = Field(default_factory=DataConverter, alias="dataConverter")
    notify: bool = True
    data_type: str | None = Field(default=None, alias="dataType")


class BleConnection(BaseModel):
    """How to find a peripheral: by `mac_address` or by advertised `name`."""

    model_config = _CONFIG

    mac_address: str | None = Field(default=None, alias="macAddress")
    name: str | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _address_or_name(self) -> Self:
        if self.mac_address is None and self.name is None:
            raise ValueError("give 'macAddress' or 'name'")
        return self
