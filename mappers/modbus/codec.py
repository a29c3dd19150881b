"""Registers <-> values for every Modbus data type, byte swap and word swap.

Modbus registers are 16-bit big-endian (spec 4.2). Multi-register values are high word first
unless `is_register_swap`; `is_swap` swaps the two bytes inside every register. Unlike
KubeEdge's driver, signed types are decoded as two's complement, and writes of any width are
supported.
"""

from __future__ import annotations

import math
import struct

from mappers.errors import InvalidValue, ValueOutOfRange
from mappers.modbus.visitor import ModbusDataType, ModbusVisitor

_STRUCT = {
    ModbusDataType.INT16: ">h",
    ModbusDataType.UINT16: ">H",
    ModbusDataType.INT32: ">i",
    ModbusDataType.UINT32: ">I",
    ModbusDataType.INT64: ">q",
    ModbusDataType.UINT64: ">Q",
    ModbusDataType.FLOAT32: ">f",
    ModbusDataType.FLOAT64: ">d",
}
_FLOATS = (ModbusDataType.FLOAT32, ModbusDataType.FLOAT64)
_FLOAT32_MAX = 3.4028234663852886e38


def _reorder(words: list[int], visitor: ModbusVisitor) -> bytes:
    """Apply the visitor's swaps: both are involutions, so this also undoes them."""
    if visitor.is_register_swap:
        words = words[::-1]
    raw = b"".join(struct.pack(">H", w & 0xFFFF) for w in words)
    if visitor.is_swap:
        raw = b"".join(raw[i + 1 : i + 2] + raw[i : i + 1] for i in range(0, len(raw), 2))
    return raw


def _words(raw: bytes) -> list[int]:
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def decode_registers(visitor: ModbusVisitor, registers: list[int]) -> int | float | bool | str:
    """Decode a property's registers, then apply scale and value offset to numbers.

    Integers stay integers when scale is 1 and the offset 0, so counters do not turn into
    floats.
    """
    kind = visitor.effective_type
    raw = _reorder(list(registers), visitor)
    if kind is ModbusDataType.BOOLEAN:
        return any(raw)
    if kind is ModbusDataType.STRING:
        return raw.rstrip(b"\x00").decode("utf-8", errors="replace")
    (number,) = struct.unpack(_STRUCT[kind], raw)
    if visitor.scale == 1 and visitor.value_offset == 0:
        return float(number) if kind in _FLOATS else int(number)
    return float(number) * visitor.scale + visitor.value_offset


def decode_bits(visitor: ModbusVisitor, bits: list[bool]) -> bool | list[bool]:
    """A coil or discrete input; several bits (limit > 1) come back as a list."""
    if len(bits) == 1:
        return bool(bits[0])
    return [bool(b) for b in bits]


def encode_registers(visitor: ModbusVisitor, value: object) -> list[int]:
    """The registers that make `value` read back as `value` through `decode_registers`.

    Raises:
        InvalidValue: the value is the wrong kind for the data type.
        ValueOutOfRange: it does not fit the data type (after scale and offset).

    """
    kind = visitor.effective_type
    if kind is ModbusDataType.STRING:
        if not isinstance(value, str):
            raise InvalidValue(f"{value!r} is not a string")
        data = value.encode()
        room = visitor.count * 2
        if len(data) > room:
            raise ValueOutOfRange(f"{len(data)} bytes do not fit {visitor.count} registers")
        return _words(_reorder(_words(data.ljust(room, b"\x00")), visitor))
    if kind is ModbusDataType.BOOLEAN:
        return _words(_reorder([1 if _truthy(value) else 0], visitor))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(f"{value!r} is not a number")
    packed = _pack_number(kind, _raw_number(visitor, kind, value))
    # _reorder works on words; undo the swaps by applying them to the packed words.
    return _words(_reorder(_words(packed), visitor))


def encode_bits(visitor: ModbusVisitor, value: object) -> list[bool]:
    """Coil values for a write: one bool, or a list of `limit` bools."""
    if isinstance(value, list):
        if len(value) != visitor.count:
            raise InvalidValue(f"expected {visitor.count} bits, got {len(value)}")
        return [_truthy(v) for v in value]
    if visitor.count != 1:
        raise InvalidValue(f"expected a list of {visitor.count} bits")
    return [_truthy(value)]


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise InvalidValue(f"{value!r} is not a boolean")


def _raw_number(visitor: ModbusVisitor, kind: ModbusDataType, value: float) -> float:
    """The number the registers hold for `value`, before packing.

    An unscaled integer register takes the value exactly: through a float, an int64 above
    2**53 would be written as its neighbour, and a fraction would be rounded without a word.
    """
    if kind in _FLOATS or visitor.scale != 1 or visitor.value_offset != 0:
        try:
            return (value - visitor.value_offset) / visitor.scale
        except OverflowError as exc:  # an int past float range
            raise ValueOutOfRange(f"{_show(value)} does not fit {kind.value}") from exc
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueOutOfRange(f"{value} is not finite")
        if not value.is_integer():
            raise InvalidValue(f"{value!r} is not an integer ({kind.value} register)")
        return int(value)
    return value


def _show(number: float) -> str:
    """A number for an error message (str() of an int of thousands of digits raises)."""
    if isinstance(number, int) and number.bit_length() > 128:
        return f"a {number.bit_length()}-bit integer"
    return repr(number)


def _pack_number(kind: ModbusDataType, raw: float) -> bytes:
    fmt = _STRUCT[kind]
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ValueOutOfRange(f"{raw} is not finite")
    if kind in _FLOATS:
        if kind is ModbusDataType.FLOAT32 and abs(raw) > _FLOAT32_MAX:
            raise ValueOutOfRange(f"{raw} does not fit float32")
        return struct.pack(fmt, raw)
    number = raw if isinstance(raw, int) else round(raw)
    bits = struct.calcsize(fmt) * 8
    signed = fmt[1].islower()
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= number <= high:
        raise ValueOutOfRange(f"{_show(number)} does not fit {kind.value} [{low}, {high}]")
    return struct.pack(fmt, number)
