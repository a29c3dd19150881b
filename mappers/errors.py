"""Errors of device mappers."""

from __future__ import annotations

from schemas.errors import EdgefabricError


class MapperError(EdgefabricError):
    """Base of every mapper error."""


class DeviceConfigError(MapperError, ValueError):
    """A device or device-model file is invalid; the message names the file and field."""


class DeviceUnavailable(MapperError):
    """The device could not be reached (connect refused, timeout, connection lost)."""


class ModbusExceptionResponse(MapperError):
    """The device answered with a Modbus exception (e.g. 2: illegal data address)."""

    def __init__(self, function_code: int, exception_code: int) -> None:
        super().__init__(
            f"Modbus exception {exception_code} for function code {function_code}"
        )
        self.function_code = function_code
        self.exception_code = exception_code
