"""Errors of device mappers.

Each error that can answer a device write carries a `code` (a `schemas.readings.WriteErrorCode`)
so the twin can tell "the device said no" from "the device did not answer" without parsing
prose.
"""

from __future__ import annotations

from typing import ClassVar

from schemas.errors import EdgefabricError
from schemas.readings import WriteErrorCode


class MapperError(EdgefabricError):
    """Base of every mapper error."""

    code: ClassVar[WriteErrorCode] = WriteErrorCode.FAILED


class DeviceConfigError(MapperError, ValueError):
    """A device or device-model file is invalid; the message names the file and field."""

    code = WriteErrorCode.INVALID_VALUE


class DeviceUnavailable(MapperError):
    """The device could not be reached (connect refused, connection lost)."""

    code = WriteErrorCode.UNAVAILABLE


class DeviceTimeout(DeviceUnavailable):
    """The device did not answer within the configured timeout."""

    code = WriteErrorCode.TIMEOUT


class ModbusExceptionResponse(MapperError):
    """The device answered with a Modbus exception (e.g. 2: illegal data address)."""

    code = WriteErrorCode.REFUSED

    def __init__(self, function_code: int, exception_code: int) -> None:
        super().__init__(f"Modbus exception {exception_code} for function code {function_code}")
        self.function_code = function_code
        self.exception_code = exception_code


class DeviceRefused(MapperError):
    """The device answered but refused the operation (OPC UA bad status, BLE ATT error)."""

    code = WriteErrorCode.REFUSED


class PropertyReadOnly(MapperError):
    """A write targeted a ReadOnly property, or one whose register kind cannot be written."""

    code = WriteErrorCode.READ_ONLY


class ValueOutOfRange(MapperError):
    """A value lies outside the property's min/max or what its data type can hold."""

    code = WriteErrorCode.OUT_OF_RANGE


class InvalidValue(MapperError):
    """A value cannot be converted to the property's type (e.g. "abc" for an int)."""

    code = WriteErrorCode.INVALID_VALUE


class UnknownProperty(MapperError):
    """A write named a property the device does not have."""

    code = WriteErrorCode.UNKNOWN_PROPERTY
