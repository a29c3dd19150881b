"""Messages and topics: the contract every service shares."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import topics
from schemas.base import check_name
from schemas.codec import decode, encode
from schemas.errors import InvalidName, SchemaError
from schemas.readings import Quality, Reading
from schemas.status import MAX_DEAD_LETTER_PAYLOAD, DeadLetter


def test_reading_round_trips_through_bytes_unchanged():
    reading = Reading(device="plc-1", property="temperature", value=21.5, unit="degC")
    assert decode(Reading, encode(reading)) == reading


def test_reading_values_may_be_any_json_including_quotes_and_spaces():
    value = {"mode": 'say "hi" {there}', "list": [1, None, True]}
    reading = Reading(device="d", property="p", value=value)
    assert decode(Reading, encode(reading)).value == value


def test_messages_are_frozen():
    reading = Reading(device="d", property="p", value=1)
    with pytest.raises(ValueError, match="frozen"):
        reading.value = 2  # type: ignore[misc]


def test_decode_names_the_offending_field():
    with pytest.raises(SchemaError, match="quality"):
        decode(Reading, b'{"device": "d", "property": "p", "value": 1, "quality": "meh"}')


def test_decode_rejects_non_json_and_oversized_payloads_with_a_reason():
    with pytest.raises(SchemaError, match="invalid Reading"):
        decode(Reading, b"\xff\x00not json")
    with pytest.raises(SchemaError, match="exceeds"):
        decode(Reading, b"{" + b" " * 2_000_000 + b"}")


def test_unknown_fields_are_refused_not_ignored():
    with pytest.raises(SchemaError, match="colour: Extra inputs"):
        decode(Reading, b'{"device": "d", "property": "p", "value": 1, "colour": "red"}')


@pytest.mark.parametrize(
    "bad", ["", "a/b", "+", "#", "x.y", "*", ">", "a b", "tab\t", "$SYS", "nul\x00"]
)
def test_names_that_would_break_a_topic_or_subject_are_refused(bad: str):
    with pytest.raises(InvalidName):
        check_name(bad)
    with pytest.raises(InvalidName):
        topics.reading(bad, "p")


def test_device_names_from_config_are_validated_with_the_field_named():
    with pytest.raises(ValueError, match="device"):
        Reading(device="a/#", property="p", value=1)


@given(st.text(min_size=1, max_size=40))
def test_any_accepted_name_yields_exactly_one_topic_level_and_one_subject_token(name: str):
    try:
        check_name(name)
    except InvalidName:
        return
    assert topics.reading(name, "p").split("/") == ["ef", "readings", name, "p"]
    subject = topics.uplink(name, topics.TrafficClass.RESULTS, "x")
    assert subject.split(".") == ["ef", "up", name, "results", "x"]


def test_queue_subjects_map_to_uplink_subjects():
    queue = topics.edge_queue("site-1", topics.TrafficClass.RESULTS, "results", "anomaly", "plc-1")
    assert queue == "efq.site-1.results.results.anomaly.plc-1"
    assert topics.uplink_from_queue("site-1", queue) == "ef.up.site-1.results.results.anomaly.plc-1"
    with pytest.raises(ValueError, match="queue"):
        topics.uplink_from_queue("site-2", queue)


def test_filters_use_wildcards_only_where_asked():
    assert topics.readings_filter() == "ef/readings/+/+"
    assert topics.readings_filter("plc-1", "temp") == "ef/readings/plc-1/temp"
    assert topics.uplink_filter() == "ef.up.*.>"
    assert topics.downlink_filters("e1") == ("ef.down.e1.>", "ef.down.all.>")


def test_dead_letters_keep_the_reason_and_bound_the_kept_payload():
    letter = DeadLetter.of(service="twin", topic="t", reason="bad", payload=b"\xff" * 10_000)
    assert letter.payload_size == 10_000
    assert len(letter.payload) == MAX_DEAD_LETTER_PAYLOAD
    assert letter.reason == "bad"


def test_quality_defaults_to_good():
    assert Reading(device="d", property="p", value=1).quality is Quality.GOOD


def test_a_message_of_another_schema_version_is_refused_with_a_clear_reason() -> None:
    payload = encode(Reading(device="plc-1", property="t", value=1.0)).replace(
        b'"schema_version":1', b'"schema_version":2'
    )
    with pytest.raises(SchemaError, match="schema_version 2 is not spoken here"):
        decode(Reading, payload)


def test_replies_is_not_a_name() -> None:
    """A device "replies" would make its desired-set topic look like a replies topic."""
    with pytest.raises(InvalidName, match="reserved"):
        check_name("replies")
    assert topics.reply_topic_refusal("ef/twin/replies/app") is None
