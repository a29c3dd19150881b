"""MQTT packets as bytes: round trips and hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import mqtt_wire as wire
from bus.mqtt_wire import PacketType, ProtocolError


def _decode_one(data: bytes, version: int) -> wire.Packet:
    buffer = bytearray(data)
    found = wire.split_packet(buffer, 1 << 20)
    assert found is not None
    first, start, end = found
    assert end == len(buffer)
    return wire.decode(first, memoryview(buffer)[start:end], version)


@given(
    topic=st.text(min_size=1, max_size=50).filter(lambda t: "\x00" not in t),
    payload=st.binary(max_size=300),
    qos=st.sampled_from([0, 1]),
    retain=st.booleans(),
    version=st.sampled_from([wire.V311, wire.V5]),
)
def test_publish_round_trips(topic: str, payload: bytes, qos: int, retain: bool, version: int):
    data = wire.publish(
        topic=topic, payload=payload, qos=qos, retain=retain, packet_id=7, version=version
    )
    packet = _decode_one(data, version)
    assert (packet.topic, packet.payload, packet.qos, packet.retain) == (
        topic,
        payload,
        qos,
        retain,
    )
    assert packet.packet_id == (7 if qos else 0)


def test_v5_response_topic_and_correlation_data_round_trip():
    props = {wire.RESPONSE_TOPIC: "reply/here", wire.CORRELATION_DATA: b"\x00\x01"}
    data = wire.publish(
        topic="t", payload=b"p", qos=1, retain=False, packet_id=1, version=wire.V5, properties=props
    )
    assert _decode_one(data, wire.V5).properties == props


@given(st.integers(min_value=0, max_value=wire.MAX_REMAINING_LENGTH))
def test_variable_length_integers_round_trip(value: int):
    encoded = wire.encode_varint(value)
    assert len(encoded) <= 4
    assert wire.decode_varint(encoded, 0) == (value, len(encoded))


def test_a_length_over_the_limit_is_refused_before_the_body_is_buffered():
    header = b"\x30" + wire.encode_varint(10_000_000)
    with pytest.raises(ProtocolError, match="exceeds"):
        wire.split_packet(bytearray(header), 1 << 20)


def test_a_five_byte_length_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        wire.split_packet(bytearray(b"\x30\xff\xff\xff\xff\x01"), 1 << 30)


@settings(max_examples=300)
@given(st.binary(max_size=64), st.sampled_from([wire.V311, wire.V5]))
def test_arbitrary_bytes_decode_or_raise_protocol_error_never_anything_else(
    data: bytes, version: int
):
    buffer = bytearray(data)
    try:
        found = wire.split_packet(buffer, 1 << 16)
        if found is not None:
            first, start, end = found
            wire.decode(first, memoryview(buffer)[start:end], version)
    except ProtocolError:
        pass


def test_suback_reason_codes_are_read_on_both_versions():
    v3 = bytes([PacketType.SUBACK << 4, 4, 0, 9, 1, 0x80])
    assert _decode_one(v3, wire.V311).reasons == [1, 0x80]
    v5 = bytes([PacketType.SUBACK << 4, 4, 0, 9, 0, 0x87])
    assert _decode_one(v5, wire.V5).reasons == [0x87]


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/+", "a/b/c", False),
        ("+/b", "$SYS/b", False),
        ("#", "$SYS/x", False),
        ("a/b", "a/b/", False),
    ],
)
def test_topic_filters_match_as_the_spec_says(topic_filter: str, topic: str, expected: bool):
    assert wire.topic_matches(topic_filter, topic) is expected
