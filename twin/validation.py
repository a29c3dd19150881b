"""Checks desired values against the device model before the twin accepts them.

The mapper checks again when it writes (the device's data type may be narrower than the model's
range); the twin's check exists so a bad update is refused *before* it is stored and replied to,
not discovered seconds later as a failed write.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mappers.device import DeviceInstance, PropertySpec, PropertyType
from schemas.base import JsonValue
from schemas.twin import TwinErrorCode
from twin.errors import TwinUpdateRefused


def _check_type(spec: PropertySpec, value: JsonValue) -> str | None:
    """Why `value` does not fit `spec`'s type and range, or None when it does."""
    kind = spec.type
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    problem: str | None = None
    match kind:
        case PropertyType.INT:
            if not is_number or (isinstance(value, float) and not value.is_integer()):
                problem = f"expected an integer, got {value!r}"
        case PropertyType.FLOAT | PropertyType.DOUBLE:
            if not is_number or not math.isfinite(float(value)):
                problem = f"expected a finite number, got {value!r}"
        case PropertyType.BOOLEAN:
            if not isinstance(value, bool):
                problem = f"expected a boolean, got {value!r}"
        case PropertyType.STRING | PropertyType.BYTES:
            if not isinstance(value, str):
                problem = f"expected a string, got {value!r}"
        case None:
            pass
    if problem is None and is_number:
        if spec.minimum is not None and float(value) < spec.minimum:
            problem = f"{value!r} is below the minimum {spec.minimum:g}"
        elif spec.maximum is not None and float(value) > spec.maximum:
            problem = f"{value!r} is above the maximum {spec.maximum:g}"
    return problem


def validate_desired(device: DeviceInstance | None, values: Mapping[str, JsonValue]) -> None:
    """Refuse desired values the device model does not allow.

    Without a device model (a device the edge has no mapper config for) every JSON value is
    accepted: the twin is then a plain state store that apps act on through the delta.
    A None value clears a desired value and is always allowed for a known property.

    Raises:
        TwinUpdateRefused: VALIDATION, with one reason per offending property.

    """
    if device is None:
        return
    problems: dict[str, str] = {}
    for name, value in values.items():
        spec = device.property(name)
        if spec is None:
            problems[name] = f"device {device.name!r} has no property {name!r}"
        elif not spec.writable:
            problems[name] = f"property {name!r} is {spec.access_mode.value}"
        elif value is not None and (problem := _check_type(spec, value)) is not None:
            problems[name] = problem
    if problems:
        summary = "; ".join(f"{name}: {why}" for name, why in sorted(problems.items()))
        raise TwinUpdateRefused(TwinErrorCode.VALIDATION, summary, problems)
