"""Every inbound topic fuzzed through a real broker: the service survives every hostile payload,
each lands on its dead-letter topic with a reason, and a valid message still works afterwards."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bus.mqtt import MqttClient
from bus.subscription import Subscription
from pipelines.settings import StreamingPipelineSettings
from pipelines.streaming import StreamingPipeline
from schemas import topics
from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.readings import DeviceState, DeviceStatus, Reading
from schemas.status import DeadLetter
from schemas.twin import TwinDesiredSet, TwinGetRequest
from tests.security.fuzz import hostile_payloads
from tests.support import wait_for
from twin.service import TwinService

DEVICE = "plc-9"


def _decodes(
    model: type[Reading | DeviceStatus | TwinDesiredSet | TwinGetRequest],
) -> Callable[[bytes], bool]:
    def accepted(payload: bytes) -> bool:
        try:
            decode(model, payload)
        except SchemaError:
            return False
        return True

    return accepted


def _numeric_reading(payload: bytes) -> bool:
    """The pipeline's rule: a Reading whose value is a number."""
    try:
        float(decode(Reading, payload).value)
    except (SchemaError, TypeError, ValueError):
        return False
    return True


@dataclass
class Observer:
    """Collects what a service publishes, by topic."""

    seen: dict[str, list[bytes]] = field(default_factory=dict)

    async def run(self, sub: Subscription) -> None:
        async for message in sub:
            self.seen.setdefault(message.topic, []).append(message.payload)

    def letters(self, service: str) -> list[DeadLetter]:
        return [decode(DeadLetter, p) for p in self.seen.get(topics.dead_letter(service), [])]


async def _fuzz(
    *,
    bus: MqttClient,
    observer: Observer,
    service: str,
    topic: str,
    payloads: list[bytes],
    timeout: float = 30.0,
) -> None:
    """Publish every hostile payload; each must come back as one dead letter with a reason."""
    await _until_listening(bus, observer, service, topic)
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


async def _until_listening(bus: MqttClient, observer: Observer, service: str, topic: str) -> None:
    """Probe until `service` dead-letters one payload on `topic`, i.e. it has subscribed.

    A service whose ``__aenter__`` returns before its subscription is active (the streaming
    pipeline today) would otherwise miss the first payloads and fail the count for that reason.
    """
    async with asyncio.timeout(15):
        while True:
            before = len(observer.letters(service))
            await bus.publish(topic, b"probe")
            try:
                await wait_for_count(observer, service, before + 1, timeout=1.0)
            except TimeoutError:
                continue
            return


async def wait_for_count(observer: Observer, service: str, count: int, timeout: float) -> None:
    """Wait until `service` has published `count` dead letters (raises TimeoutError)."""
    async with asyncio.timeout(timeout):
        while len(observer.letters(service)) < count:
            await asyncio.sleep(0.02)


@pytest.fixture
async def observed(mosquitto_url: str) -> AsyncIterator[tuple[MqttClient, Observer]]:
    async with (
        MqttClient(mosquitto_url, client_id="fuzzer") as bus,
        bus.subscribe("ef/#", maxsize=10_000) as sub,
        asyncio.TaskGroup() as tg,
    ):
        observer = Observer()
        task = tg.create_task(observer.run(sub))
        yield bus, observer
        task.cancel()


async def test_twin_survives_hostile_payloads_on_every_inbound_topic(
    mosquitto_url: str, observed: tuple[MqttClient, Observer], tmp_path: Path
) -> None:
    bus, observer = observed
    reply = topics.twin_reply("fuzzer")
    reading = Reading(device=DEVICE, property="t", value=1.5)
    status = DeviceStatus(device=DEVICE, state=DeviceState.ONLINE)
    desired = TwinDesiredSet(device=DEVICE, values={"t": 2}, reply_to=reply, correlation_id="d")
    get = TwinGetRequest(device=DEVICE, reply_to=reply, correlation_id="g")
    cases = [
        (topics.reading(DEVICE, "t"), reading, _decodes(Reading)),
        (topics.device_status(DEVICE), status, _decodes(DeviceStatus)),
        (topics.twin_desired_set(DEVICE), desired, _decodes(TwinDesiredSet)),
        # An empty body on the get topic is a valid "get this device".
        (topics.twin_get(DEVICE), get, lambda p: not p.strip() or _decodes(TwinGetRequest)(p)),
    ]
    async with (
        MqttClient(mosquitto_url, client_id="twin") as twin_bus,
        TwinService(bus=twin_bus, db_path=tmp_path / "twin.db") as twin,
    ):
        for topic, valid, accepted in cases:
            payloads = hostile_payloads(json.loads(encode(valid)), accepted)
            await _fuzz(bus=bus, observer=observer, service="twin", topic=topic, payloads=payloads)
        # Still alive: each valid message is handled after all that.
        for topic, valid, _ in cases:
            await bus.publish(topic, encode(valid))
        await wait_for(lambda: len(observer.seen.get(reply, [])) >= 2, what="desired+get replies")
        await wait_for(
            lambda: (
                twin.store.document(DEVICE).properties.get("t") is not None
                and twin.store.document(DEVICE).properties["t"].reported is not None
            ),
            what="reported value stored",
        )
        assert twin.state.value == "running"


async def test_pipeline_survives_hostile_readings(
    mosquitto_url: str, observed: tuple[MqttClient, Observer]
) -> None:
    bus, observer = observed
    settings = StreamingPipelineSettings(name="fz", device=DEVICE, property="vib", window=4, hop=1)
    topic = topics.reading(DEVICE, "vib")
    valid = Reading(device=DEVICE, property="vib", value=0.1)
    async with (
        MqttClient(mosquitto_url, client_id="pipelines") as pipe_bus,
        StreamingPipeline(settings, bus=pipe_bus) as pipeline,
    ):
        payloads = hostile_payloads(json.loads(encode(valid)), _numeric_reading)
        await _fuzz(bus=bus, observer=observer, service="pipelines", topic=topic, payloads=payloads)
        for _ in range(settings.window):
            await bus.publish(topic, encode(Reading(device=DEVICE, property="vib", value=0.1)))
        await wait_for(
            lambda: observer.seen.get(topics.result("fz", DEVICE)), what="an inference result"
        )
        assert pipeline.rejected >= len(payloads)  # plus the probes


async def test_twin_refuses_a_reading_whose_body_names_another_device(
    mosquitto_url: str, observed: tuple[MqttClient, Observer], tmp_path: Path
) -> None:
    bus, observer = observed
    forged = Reading(device="plc-2", property="t", value=99)
    async with (
        MqttClient(mosquitto_url, client_id="twin") as twin_bus,
        TwinService(bus=twin_bus, db_path=tmp_path / "twin.db"),
    ):
        await _fuzz(
            bus=bus,
            observer=observer,
            service="twin",
            topic=topics.reading(DEVICE, "t"),
            payloads=[encode(forged)],
            timeout=3,
        )


async def test_pipeline_refuses_non_finite_values(
    mosquitto_url: str, observed: tuple[MqttClient, Observer]
) -> None:
    bus, observer = observed
    settings = StreamingPipelineSettings(name="fz", device=DEVICE, property="vib", window=4, hop=1)
    async with (
        MqttClient(mosquitto_url, client_id="pipelines") as pipe_bus,
        StreamingPipeline(settings, bus=pipe_bus),
    ):
        payloads = [encode(Reading(device=DEVICE, property="vib", value=v)) for v in ("nan", "inf")]
        await _fuzz(
            bus=bus,
            observer=observer,
            service="pipelines",
            topic=topics.reading(DEVICE, "vib"),
            payloads=payloads,
            timeout=3,
        )
