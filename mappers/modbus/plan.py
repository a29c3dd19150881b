"""Merge the properties of one device into as few Modbus read requests as possible.

One request covers at most 125 registers or 2000 bits (spec 6.1-6.4); properties of one
register kind whose ranges touch (or are within `gap` unused addresses) share a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mappers.device import PropertySpec
from mappers.modbus.visitor import (
    MAX_BITS_PER_READ,
    MAX_REGISTERS_PER_READ,
    ModbusVisitor,
    RegisterType,
)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read request and the properties it serves."""

    kind: RegisterType
    start: int
    count: int
    props: tuple[PropertySpec, ...]


def _visitor(prop: PropertySpec) -> ModbusVisitor:
    if prop.modbus is None:  # pragma: no cover - DeviceInstance validation guarantees it
        raise ValueError(f"property {prop.name!r} has no modbus visitor")
    return prop.modbus


def plan_reads(
    props: Sequence[PropertySpec], *, merge: bool = True, gap: int = 0
) -> list[ReadRequest]:
    """The requests that read every property of `props`.

    Args:
        props: properties with a Modbus visitor.
        merge: False gives one request per property (the bench's baseline).
        gap: unused addresses a merged request may span.

    """
    if not merge:
        return [
            ReadRequest(_visitor(p).register_type, _visitor(p).offset, _visitor(p).count, (p,))
            for p in props
        ]
    requests: list[ReadRequest] = []
    by_kind: dict[RegisterType, list[PropertySpec]] = {}
    for prop in props:
        by_kind.setdefault(_visitor(prop).register_type, []).append(prop)
    for kind, members in by_kind.items():
        limit = MAX_BITS_PER_READ if kind.is_bits else MAX_REGISTERS_PER_READ
        members.sort(key=lambda p: _visitor(p).offset)
        start, end, batch = -1, -1, list[PropertySpec]()
        for prop in members:
            v = _visitor(prop)
            new_end = max(end, v.offset + v.count)
            if batch and v.offset <= end + gap and new_end - start <= limit:
                end = new_end
                batch.append(prop)
                continue
            if batch:
                requests.append(ReadRequest(kind, start, end - start, tuple(batch)))
            start, end, batch = v.offset, v.offset + v.count, [prop]
        if batch:
            requests.append(ReadRequest(kind, start, end - start, tuple(batch)))
    return requests
