"""Every inbound topic fuzzed through a real broker: the service survives every hostile payload,
each lands on its dead-letter topic with a reason, and a valid message still works afterwards."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bus.mqtt import MqttClient
from pipelines.settings import StreamingPipelineSettings
from pipelines.streaming import StreamingPipeline
from schemas import topics
from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.readings import DeviceState, DeviceStatus, Reading
from schemas.twin import TwinDesiredSet, TwinGetRequest
from tests.security.fuzz import Observer, fuzz_topic, hostile_payloads, observing
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


@pytest.fixture
async def observed(mosquitto_url: str) -> AsyncIterator[tuple[MqttClient, Observer]]:
    async with observing(mosquitto_url) as pair:
        yield pair


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
            await fuzz_topic(
                bus=bus, observer=observer, service="twin", topic=topic, payloads=payloads
            )
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
        await fuzz_topic(
            bus=bus, observer=observer, service="pipelines", topic=topic, payloads=payloads
        )
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
        await fuzz_topic(
            bus=bus,
            observer=observer,
            service="twin",
            topic=topics.reading(DEVICE, "t"),
            payloads=[encode(forged)],
            timeout=3,
        )


async def test_twin_refuses_a_status_whose_body_names_another_device(
    mosquitto_url: str, observed: tuple[MqttClient, Observer], tmp_path: Path
) -> None:
    """Else a mapper could mark another device online and make the twin re-send its writes."""
    bus, observer = observed
    forged = DeviceStatus(device="plc-2", state=DeviceState.ONLINE)
    async with (
        MqttClient(mosquitto_url, client_id="twin") as twin_bus,
        TwinService(bus=twin_bus, db_path=tmp_path / "twin.db") as twin,
    ):
        await fuzz_topic(
            bus=bus,
            observer=observer,
            service="twin",
            topic=topics.device_status(DEVICE),
            payloads=[encode(forged)],
            timeout=3,
        )
        assert twin.store.document("plc-2").state is None


async def test_pipeline_refuses_a_reading_whose_body_names_another_device(
    mosquitto_url: str, observed: tuple[MqttClient, Observer]
) -> None:
    """Else a mapper could fill another device's window and fake that device's results."""
    bus, observer = observed
    settings = StreamingPipelineSettings(name="fz", device=None, property="vib", window=2, hop=1)
    forged = Reading(device="plc-2", property="vib", value=0.5)
    async with (
        MqttClient(mosquitto_url, client_id="pipelines") as pipe_bus,
        StreamingPipeline(settings, bus=pipe_bus),
    ):
        await fuzz_topic(
            bus=bus,
            observer=observer,
            service="pipelines",
            topic=topics.reading(DEVICE, "vib"),
            payloads=[encode(forged)] * 3,  # a full window, were they taken
            timeout=3,
        )
    assert topics.result("fz", "plc-2") not in observer.seen


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
        await fuzz_topic(
            bus=bus,
            observer=observer,
            service="pipelines",
            topic=topics.reading(DEVICE, "vib"),
            payloads=payloads,
            timeout=3,
        )
