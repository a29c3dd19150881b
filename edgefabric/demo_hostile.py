"""The demo's hardening act: hostile messages are refused with a reason, and nothing stops."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TextIO

from bus.mqtt import MqttClient
from edgefabric.demo_view import DemoCounts
from schemas import topics
from schemas.codec import decode
from schemas.errors import SchemaError
from schemas.status import DeadLetter

PROBES: tuple[tuple[str, str, bytes], ...] = (
    ("a truncated reading", topics.reading("plc-1", "temperature"), b'{"device": "plc-1", "va'),
    ("a 20,000-deep nesting bomb", topics.twin_desired_set("plc-1"), b"[" * 20_000),
    ("binary garbage as a device write", topics.device_write("plc-1"), b"\xff\xfe\x00\x01"),
)
"""(what, topic, payload): one hostile message for the twin, the twin API and the mapper."""


async def hostile_input_act(bus: MqttClient, counts: DemoCounts, out: TextIO) -> None:
    """Send `PROBES`; every one must come back as a dead letter naming the reason.

    A plant network carries whatever a misconfigured or hostile client sends; the promise is
    that no payload crashes a service and none vanishes without a trace.
    """
    letters: dict[str, DeadLetter] = {}
    async with bus.subscribe(topics.dead_letter_filter(), maxsize=1000) as sub:
        for what, topic, payload in PROBES:
            await bus.publish(topic, payload)
            counts.event(f"hardening: {what} published on {topic}", out)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                async for message in sub:
                    with contextlib.suppress(SchemaError):
                        letter = decode(DeadLetter, message.payload)
                        letters.setdefault(letter.topic, letter)
                    if all(topic in letters for _, topic, _ in PROBES):
                        break
    for _, topic, _ in PROBES:
        found = letters.get(topic)
        if found is None:
            counts.event(f"hardening: NO dead letter for {topic}", out)
        else:
            counts.event(f"hardening: {found.service} refused it: {found.reason[:70]}", out)
    counts.acts["hostile_input"] = {
        "sent": len(PROBES),
        "dead_lettered": sum(topic in letters for _, topic, _ in PROBES),
        "reasons": {topic: letters[topic].reason for _, topic, _ in PROBES if topic in letters},
    }
