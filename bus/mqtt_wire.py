"""MQTT 3.1.1 and 5.0 packets, as bytes: the small subset edgefabric's client speaks.

Pure functions with no I/O, so they are tested directly (round trips, hostile input) and the
client stays a thin loop around them. Spec references are to OASIS MQTT 3.1.1 (section numbers
"3.1.1 §x") and MQTT 5.0 ("v5 §x").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from bus.errors import BusError


class ProtocolError(BusError):
    """The peer sent bytes that are not a valid MQTT packet."""


class PacketType(IntEnum):
    """Control packet types (3.1.1 §2.2.1)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


V311 = 4
V5 = 5
MAX_REMAINING_LENGTH = 268_435_455  # 3.1.1 §2.2.3: four bytes of variable length

# v5 §2.2.2.2: property identifier -> wire type.
_BYTE, _U16, _U32, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES = {
    0x01: _BYTE,
    0x02: _U32,
    0x03: _UTF8,
    0x08: _UTF8,
    0x09: _BINARY,
    0x0B: _VARINT,
    0x11: _U32,
    0x12: _UTF8,
    0x13: _U16,
    0x15: _UTF8,
    0x16: _BINARY,
    0x17: _BYTE,
    0x18: _U32,
    0x19: _BYTE,
    0x1A: _UTF8,
    0x1C: _UTF8,
    0x1F: _UTF8,
    0x21: _U16,
    0x22: _U16,
    0x23: _U16,
    0x24: _BYTE,
    0x25: _BYTE,
    0x26: _PAIR,
    0x27: _U32,
    0x28: _BYTE,
    0x29: _BYTE,
    0x2A: _BYTE,
}
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SESSION_EXPIRY = 0x11
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
MAXIMUM_PACKET_SIZE = 0x27

Properties = dict[int, object]


def encode_varint(value: int) -> bytes:
    """Variable byte integer (3.1.1 §2.2.3)."""
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"{value} does not fit an MQTT variable byte integer")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_varint(data: bytes | bytearray | memoryview, offset: int) -> tuple[int, int] | None:
    """(value, next offset), or None when more bytes are needed.

    Raises:
        ProtocolError: more than four bytes (a malformed or hostile length).

    """
    value = 0
    for i in range(4):
        if offset + i >= len(data):
            return None
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, offset + i + 1
    raise ProtocolError("variable byte integer longer than four bytes")


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _binary(raw: bytes) -> bytes:
    return struct.pack("!H", len(raw)) + raw


def encode_properties(props: Properties) -> bytes:
    """v5 property block: length, then identifier + value per property."""
    body = bytearray()
    for ident, value in props.items():
        kind = _PROPERTY_TYPES[ident]
        body.append(ident)
        if kind == _BYTE:
            body.append(int(value))  # type: ignore[call-overload]
        elif kind == _U16:
            body += struct.pack("!H", value)
        elif kind == _U32:
            body += struct.pack("!I", value)
        elif kind == _VARINT:
            body += encode_varint(int(value))  # type: ignore[call-overload]
        elif kind == _UTF8:
            body += _utf8(str(value))
        elif kind == _BINARY:
            body += _binary(bytes(value))  # type: ignore[call-overload]
        else:
            raise ValueError(f"property {ident:#x} cannot be encoded here")
    return encode_varint(len(body)) + bytes(body)


class _Reader:
    """Bounds-checked reads over one packet body."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ProtocolError("packet shorter than its fields")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack("!H", self._take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("!I", self._take(4))[0])

    def varint(self) -> int:
        decoded = decode_varint(self.data, self.pos)
        if decoded is None:
            raise ProtocolError("truncated variable byte integer")
        value, self.pos = decoded
        return value

    def binary(self) -> bytes:
        return bytes(self._take(self.u16()))

    def utf8(self) -> str:
        try:
            return self.binary().decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("invalid UTF-8 string") from exc

    def rest(self) -> bytes:
        chunk = bytes(self.data[self.pos :])
        self.pos = len(self.data)
        return chunk

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def properties(self) -> Properties:
        end = self.varint() + self.pos
        if end > len(self.data):
            raise ProtocolError("property block longer than the packet")
        props: Properties = {}
        readers = {
            _BYTE: self.byte,
            _U16: self.u16,
            _U32: self.u32,
            _VARINT: self.varint,
            _UTF8: self.utf8,
            _BINARY: self.binary,
        }
        while self.pos < end:
            ident = self.varint()
            kind = _PROPERTY_TYPES.get(ident)
            if kind is None:
                raise ProtocolError(f"unknown property {ident:#x}")
            if kind == _PAIR:
                self.utf8()
                self.utf8()  # user properties are not used by edgefabric
                continue
            props[ident] = readers[kind]()
        return props


def _packet(kind: PacketType, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + encode_varint(len(body)) + body


def connect(
    *,
    client_id: str,
    version: int,
    clean: bool,
    keepalive: int,
    username: str | None = None,
    password: str | None = None,
    properties: Properties | None = None,
) -> bytes:
    """CONNECT (3.1.1 §3.1, v5 §3.1)."""
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    body = bytearray(_utf8("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive))
    if version == V5:
        body += encode_properties(properties or {})
    body += _utf8(client_id)
    if username is not None:
        body += _utf8(username)
    if password is not None:
        body += _binary(password.encode())
    return _packet(PacketType.CONNECT, 0, bytes(body))


def publish(
    *,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    packet_id: int,
    version: int,
    dup: bool = False,
    properties: Properties | None = None,
) -> bytes:
    """PUBLISH (3.1.1 §3.3, v5 §3.3)."""
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    head = _utf8(topic)
    if qos:
        head += struct.pack("!H", packet_id)
    if version == V5:
        head += encode_properties(properties or {})
    return _packet(PacketType.PUBLISH, flags, head + payload)


def puback(packet_id: int) -> bytes:
    """PUBACK with success (the short form is valid on both versions, v5 §3.4.2.1)."""
    return b"\x40\x02" + struct.pack("!H", packet_id)


def subscribe(packet_id: int, filters: list[tuple[str, int]], version: int) -> bytes:
    """SUBSCRIBE (3.1.1 §3.8, v5 §3.8); the options byte carries only the QoS."""
    body = bytearray(struct.pack("!H", packet_id))
    if version == V5:
        body += encode_properties({})
    for topic_filter, qos in filters:
        body += _utf8(topic_filter) + bytes([qos])
    return _packet(PacketType.SUBSCRIBE, 0x02, bytes(body))


def unsubscribe(packet_id: int, filters: list[str], version: int) -> bytes:
    """UNSUBSCRIBE (3.1.1 §3.10, v5 §3.10)."""
    body = bytearray(struct.pack("!H", packet_id))
    if version == V5:
        body += encode_properties({})
    for topic_filter in filters:
        body += _utf8(topic_filter)
    return _packet(PacketType.UNSUBSCRIBE, 0x02, bytes(body))


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


@dataclass(slots=True)
class Packet:
    """A decoded packet; only the fields its type uses are set."""

    type: PacketType
    flags: int = 0
    packet_id: int = 0
    topic: str = ""
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    reason: int = 0
    session_present: bool = False
    reasons: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=dict)


def split_packet(buffer: bytearray, max_size: int) -> tuple[int, int, int] | None:
    """Find one whole packet at the start of `buffer`: (first byte, body start, body end).

    Returns None while the packet is incomplete.

    Raises:
        ProtocolError: the announced length exceeds `max_size` (checked before buffering it).

    """
    if len(buffer) < 2:
        return None
    decoded = decode_varint(buffer, 1)
    if decoded is None:
        return None
    length, start = decoded
    if length > max_size:
        raise ProtocolError(f"packet of {length} bytes exceeds the {max_size}-byte limit")
    if len(buffer) < start + length:
        return None
    return buffer[0], start, start + length


def decode(first: int, body: memoryview, version: int) -> Packet:
    """Decode one packet the broker sent.

    Raises:
        ProtocolError: unknown type or malformed fields.

    """
    try:
        kind = PacketType(first >> 4)
    except ValueError as exc:
        raise ProtocolError(f"unexpected packet type {first >> 4}") from exc
    reader = _Reader(body)
    packet = Packet(type=kind, flags=first & 0x0F)
    if kind is PacketType.PUBLISH:
        _decode_publish(packet, reader, version)
    elif kind is PacketType.CONNACK:
        packet.session_present = bool(reader.byte() & 0x01)
        packet.reason = reader.byte()
        if version == V5 and not reader.at_end():
            packet.properties = reader.properties()
    elif kind in (PacketType.PUBACK, PacketType.UNSUBACK, PacketType.SUBACK):
        _decode_ack(packet, reader, version)
    elif kind is PacketType.DISCONNECT and version == V5 and not reader.at_end():
        packet.reason = reader.byte()
    return packet


def _decode_publish(packet: Packet, reader: _Reader, version: int) -> None:
    first = packet.flags
    packet.qos = (first >> 1) & 0x03
    if packet.qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    packet.retain = bool(first & 0x01)
    packet.dup = bool(first & 0x08)
    packet.topic = reader.utf8()
    if packet.qos:
        packet.packet_id = reader.u16()
    if version == V5:
        packet.properties = reader.properties()
    packet.payload = reader.rest()


def _decode_ack(packet: Packet, reader: _Reader, version: int) -> None:
    packet.packet_id = reader.u16()
    if version == V5 and not reader.at_end():
        if packet.type is PacketType.PUBACK:
            packet.reason = reader.byte()
        if not reader.at_end():
            packet.properties = reader.properties()
    if packet.type is not PacketType.PUBACK:
        packet.reasons = list(reader.rest())


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching with + and #; '$' topics match no leading wildcard (§4.7.2)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)
