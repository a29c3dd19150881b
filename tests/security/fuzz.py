"""Hostile payloads for the fuzz tests, generated deterministically by hypothesis.

The payloads are drawn once per test (derandomized, bounded) and then published through a
real broker to a running service, so one service instance must survive all of them in a row,
which is the promise: no payload crashes a service.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bus.mqtt import MqttClient
from bus.subscription import Subscription
from schemas import topics
from schemas.codec import MAX_JSON_PAYLOAD, decode
from schemas.status import DeadLetter
from tests.support import wait_for

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_hostile_values = st.one_of(
    st.sampled_from(
        ["a/#", "+", "x\x00y", "", "a" * 300, "$SYS/x", "a.b.>", "../etc/passwd", "\u202e"]
    ),
    _json,
)

FIXED_HOSTILE: tuple[bytes, ...] = (
    b"",
    b"{",
    b"\xff\xfe\x00garbage",
    b"[" * 20_000 + b"]" * 20_000,  # nesting bomb: the parser's depth limit must hold
    b'{"kind": "reading", "device": "' + b"a" * (MAX_JSON_PAYLOAD + 1) + b'"}',  # too big
    b"null",
    b'{"schema_version": 999}',
)
"""Hand-picked payloads every inbound topic gets in addition to the generated ones."""


def hostile_payloads(
    valid: dict[str, Any], is_accepted: Callable[[bytes], bool], *, examples: int = 30
) -> list[bytes]:
    """Malformed, mutated and oversized payloads the service must refuse.

    Args:
        valid: a valid message of the topic's kind, as a JSON object; mutants replace or drop
            one of its fields.
        is_accepted: the service's own acceptance rule; drawn payloads it would accept are
            discarded, so every payload returned must end in a dead letter.
        examples: how many generated payloads (on top of `FIXED_HOSTILE`).
    """
    drawn: list[bytes] = []

    def mutant(field: str, value: object, drop: bool) -> bytes:
        body = dict(valid)
        if drop:
            body.pop(field, None)
        else:
            body[field] = value
        return json.dumps(body).encode()

    payloads = st.one_of(
        st.binary(max_size=256),
        _json.map(lambda v: json.dumps(v).encode()),
        st.builds(mutant, st.sampled_from(sorted(valid)), _hostile_values, st.booleans()),
    )

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    )
    @given(payloads)
    def collect(payload: bytes) -> None:
        assume(not is_accepted(payload))
        drawn.append(payload)

    collect()
    return [*FIXED_HOSTILE, *drawn]


@dataclass
class Observer:
    """Collects what services publish under ``ef/#``, by topic."""

    seen: dict[str, list[bytes]] = field(default_factory=dict)

    async def run(self, sub: Subscription) -> None:
        """Keep every message of `sub` until cancelled."""
        async for message in sub:
            self.seen.setdefault(message.topic, []).append(message.payload)

    def letters(self, service: str) -> list[DeadLetter]:
        """Every dead letter `service` published so far."""
        return [decode(DeadLetter, p) for p in self.seen.get(topics.dead_letter(service), [])]


@asynccontextmanager
async def observing(
    url: str, client_id: str = "fuzzer"
) -> AsyncIterator[tuple[MqttClient, Observer]]:
    """A client to publish hostile payloads with, and an `Observer` of everything ``ef/#``."""
    async with (
        MqttClient(url, client_id=client_id) as bus,
        bus.subscribe("ef/#", maxsize=10_000) as sub,
        asyncio.TaskGroup() as tg,
    ):
        observer = Observer()
        task = tg.create_task(observer.run(sub))
        try:
            yield bus, observer
        finally:
            task.cancel()


async def until_listening(bus: MqttClient, observer: Observer, service: str, topic: str) -> None:
    """Probe until `service` dead-letters one ``probe`` payload on `topic` (it has subscribed)."""
    async with asyncio.timeout(15):
        while True:
            before = len(observer.letters(service))
            await bus.publish(topic, b"probe")
            try:
                async with asyncio.timeout(1.0):
                    while len(observer.letters(service)) <= before:
                        await asyncio.sleep(0.02)
            except TimeoutError:
                continue
            return


async def fuzz_topic(
    *,
    bus: MqttClient,
    observer: Observer,
    service: str,
    topic: str,
    payloads: list[bytes],
    timeout: float = 30.0,
) -> list[DeadLetter]:
    """Publish every payload on `topic`; each must come back as one dead letter with a reason.

    Returns:
        The dead letters, in arrival order.

    """
    await until_listening(bus, observer, service, topic)
    before = len(observer.letters(service))
    for payload in payloads:
        await bus.publish(topic, payload)
    await wait_for(
        lambda: len(observer.letters(service)) >= before + len(payloads),
        timeout=timeout,
        what=f"{len(payloads)} dead letters from {service} for {topic}",
    )
    letters = observer.letters(service)[before:]
    assert len(letters) == len(payloads)
    assert all(letter.topic == topic and letter.reason for letter in letters)
    assert sorted(letter.payload_size for letter in letters) == sorted(len(p) for p in payloads)
    return letters
