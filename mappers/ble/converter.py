"""KubeEdge's Bluetooth data converter, with a real byte order (and its inverse for writes).

KubeEdge joins the selected bytes as *decimal strings* (bytes 0x01 0x02 become 12); here they
form an integer in the configured byte order and signedness, as the sensor meant. Then, like
KubeEdge: shift left, shift right, then `orderOfOperations` in order.
"""

from __future__ import annotations

from mappers.ble.visitor import DataConverter, Operation
from mappers.errors import InvalidValue, ValueOutOfRange


def _span(conv: DataConverter, size: int) -> tuple[int, int]:
    end = size - 1 if conv.end_index is None else conv.end_index
    if conv.start_index >= size or end >= size:
        raise InvalidValue(f"bytes [{conv.start_index}..{end}] outside a {size}-byte value")
    return conv.start_index, end + 1


def decode(conv: DataConverter, data: bytes) -> int | float:
    """Bytes of a characteristic -> number."""
    start, stop = _span(conv, len(data))
    number = int.from_bytes(data[start:stop], conv.byte_order, signed=conv.signed)  # type: ignore[arg-type]
    number <<= conv.shift_left
    number >>= conv.shift_right
    value: int | float = number
    for step in conv.order_of_operations:
        match step.operation_type:
            case Operation.ADD:
                value += step.operation_value
            case Operation.SUBTRACT:
                value -= step.operation_value
            case Operation.MULTIPLY:
                value *= step.operation_value
            case Operation.DIVIDE:
                value /= step.operation_value
    return value


def encode(conv: DataConverter, value: float, current: bytes) -> bytes:
    """Number -> characteristic bytes: the inverse of `decode`, spliced into `current`.

    Bytes outside [startIndex, endIndex] keep their current value (read-modify-write).

    Raises:
        ValueOutOfRange: the value does not fit the selected bytes.

    """
    start, stop = _span(conv, len(current))
    raw = float(value)
    for step in reversed(conv.order_of_operations):
        match step.operation_type:
            case Operation.ADD:
                raw -= step.operation_value
            case Operation.SUBTRACT:
                raw += step.operation_value
            case Operation.MULTIPLY:
                raw /= step.operation_value
            case Operation.DIVIDE:
                raw *= step.operation_value
    number = round(raw) << conv.shift_right >> conv.shift_left
    try:
        chunk = number.to_bytes(stop - start, conv.byte_order, signed=conv.signed)  # type: ignore[arg-type]
    except OverflowError as exc:
        raise ValueOutOfRange(f"{value} does not fit {stop - start} byte(s)") from exc
    return current[:start] + chunk + current[stop:]
