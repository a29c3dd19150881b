"""Turning decoded device values into property values and back, with the model's checks.

Every protocol decodes its wire format into a plain Python value first (int, float, bool,
str, bytes); this module then applies what the *device model* says — the property's type and
its min/max — so the rules are the same for Modbus, OPC UA and Bluetooth.
"""

from __future__ import annotations

import math

from mappers.device import PropertySpec, PropertyType
from mappers.errors import InvalidValue, ValueOutOfRange
from schemas.base import JsonValue


def to_reported(prop: PropertySpec, value: object) -> JsonValue:
    """A decoded device value as the property's type, fit for a JSON `Reading`.

    Bytes become lowercase hex (JSON has no bytes). A value that cannot take the type is
    reported as decoded rather than lost.
    """
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if prop.type is None:
        return value
    try:
        return _coerce(prop.type, value)
    except InvalidValue:
        return value


def to_writable(prop: PropertySpec, value: JsonValue) -> JsonValue:
    """Check and convert a requested value before any byte goes to the device.

    Raises:
        InvalidValue: the value cannot take the property's type.
        ValueOutOfRange: outside the property's min/max.

    """
    if (
        prop.type is PropertyType.INT
        and isinstance(value, float)
        and math.isfinite(value)
        and not value.is_integer()
    ):
        # Readings of an int property are rounded (`to_reported`); a write is refused instead,
        # so a device never gets a value nobody asked for.
        raise InvalidValue(f"{value!r} is not an integer")
    coerced = value if prop.type is None else _coerce(prop.type, value)
    if isinstance(coerced, bool) or not isinstance(coerced, int | float):
        if prop.type is None and not isinstance(coerced, bool | str | bytes):
            raise InvalidValue(f"{value!r} is not a number, boolean or string")
        return coerced
    # An int is always finite (and math.isfinite overflows on one past float range).
    if isinstance(coerced, float) and not math.isfinite(coerced):
        raise ValueOutOfRange(f"{coerced} is not finite")
    if prop.minimum is not None and coerced < prop.minimum:
        raise ValueOutOfRange(f"{coerced} is below min {prop.minimum}")
    if prop.maximum is not None and coerced > prop.maximum:
        raise ValueOutOfRange(f"{coerced} is above max {prop.maximum}")
    return coerced


def _coerce(kind: PropertyType, value: object) -> JsonValue:
    match kind:
        case PropertyType.INT:
            return _as_int(value)
        case PropertyType.FLOAT | PropertyType.DOUBLE:
            return _as_float(value)
        case PropertyType.BOOLEAN:
            return _as_bool(value)
        case PropertyType.STRING:
            if isinstance(value, str | int | float):
                return str(value)
            raise InvalidValue(f"{value!r} is not a string")
        case PropertyType.BYTES:
            return _as_bytes(value)


def _as_int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueOutOfRange(f"{value} is not finite")
        if value != int(value):
            # A reading keeps its fraction when the device model says int: round it.
            return round(value)
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError as exc:
            raise InvalidValue(f"{value!r} is not an integer") from exc
    raise InvalidValue(f"{value!r} is not an integer")


def _as_float(value: object) -> float:
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError as exc:  # an int past float range (JSON allows any length)
            bits = int(value).bit_length()
            raise ValueOutOfRange(f"a {bits}-bit integer does not fit a float") from exc
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError as exc:
            raise InvalidValue(f"{value!r} is not a number") from exc
    raise InvalidValue(f"{value!r} is not a number")


_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidValue(f"{value!r} is not a boolean")


def _as_bytes(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, str):
        try:
            return bytes.fromhex(value).hex()
        except ValueError as exc:
            raise InvalidValue(f"{value!r} is not hex bytes") from exc
    raise InvalidValue(f"{value!r} is not hex bytes")
