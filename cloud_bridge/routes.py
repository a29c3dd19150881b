"""Which local MQTT topics leave the site, in which traffic class, under which subject."""

from __future__ import annotations

import json

from schemas import topics
from schemas.base import check_name
from schemas.errors import InvalidName
from schemas.topics import TrafficClass

UPLINK_ROUTES: tuple[tuple[str, TrafficClass], ...] = (
    (topics.results_filter(), TrafficClass.RESULTS),
    (topics.hard_examples_filter(), TrafficClass.HARD_EXAMPLES),
    (topics.device_status_filter(), TrafficClass.TWIN),
    (topics.ROOT + "/twin/+/document", TrafficClass.TWIN),
    (topics.ROOT + "/twin/+/errors", TrafficClass.TWIN),
    (topics.fl_update_filter(), TrafficClass.CONTROL),
)
"""MQTT filters the bridge subscribes to, highest-priority class last in the table is fine:
priority is applied when draining, not when subscribing."""


def class_of(topic: str) -> TrafficClass:
    """Traffic class of a local topic (the second level names the kind)."""
    kind = topic.split("/", 2)[1] if topic.count("/") >= 1 else ""
    return {
        "results": TrafficClass.RESULTS,
        "hard-examples": TrafficClass.HARD_EXAMPLES,
        "devices": TrafficClass.TWIN,
        "twin": TrafficClass.TWIN,
        "fl": TrafficClass.CONTROL,
    }.get(kind, TrafficClass.RESULTS)


def queue_subject(edge: str, topic: str) -> str:
    """The edge-queue subject for a local topic: ``ef/a/b`` -> ``efq.{edge}.{class}.a.b``.

    Raises:
        InvalidName: a topic level cannot be a subject token (the bridge dead-letters it).

    """
    levels = topic.split("/")
    if len(levels) < 2 or levels[0] != topics.ROOT:
        raise InvalidName(topic, "is not an edgefabric topic")
    return topics.edge_queue(edge, class_of(topic), *levels[1:])


def message_id_of(payload: bytes) -> str | None:
    """The `message_id` of an edgefabric JSON message, or None for other payloads."""
    if not payload.startswith(b"{"):
        return None
    try:
        value = json.loads(payload).get("message_id")
    except (ValueError, AttributeError):
        return None
    if isinstance(value, str) and value:
        try:
            return check_name(value)
        except InvalidName:
            return None
    return None
