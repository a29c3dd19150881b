"""The twin's MQTT API on both brokers: set, get, delta, document, errors, dead letters."""

from __future__ import annotations

from pathlib import Path

from bus.mqtt import MqttClient
from mappers.device import DeviceInstance, PropertySpec
from mappers.modbus.visitor import ModbusConnection, ModbusVisitor
from schemas import topics
from schemas.codec import decode, encode
from schemas.readings import Reading
from schemas.status import DeadLetter
from schemas.twin import (
    TwinDelta,
    TwinDocument,
    TwinError,
    TwinErrorCode,
    TwinGetRequest,
    TwinGetResponse,
)
from tests.support import collect, wait_for
from tests.twin.helpers import running_twin

ODD = {"mode": 'eco "quiet" {night}', "steps": [1, 2.5, None], "on": True}


def thermostat() -> DeviceInstance:
    return DeviceInstance(
        name="thermo",
        modbus=ModbusConnection(port=1),
        properties=[
            PropertySpec(
                name="setpoint",
                type="double",
                accessMode="ReadWrite",
                min=5,
                max=30,
                modbus=ModbusVisitor(offset=10),
            ),
            PropertySpec(name="temperature", type="double", modbus=ModbusVisitor(offset=0)),
        ],
    )


async def test_desired_set_is_acknowledged_and_holds_any_json(
    broker_url: str, tmp_path: Path
) -> None:
    async with running_twin(broker_url, tmp_path / "twin.db") as run:
        result = await run.client.set("lamp", {"config": ODD, "label": "a b 'c'"})
        assert result.ok
        assert result.desired_version == 1
        document = await run.client.get("lamp")
        assert document.properties["config"].desired is not None
        assert document.properties["config"].desired.value == ODD
        assert document.properties["label"].desired.value == "a b 'c'"  # type: ignore[union-attr]
        assert document.delta() == {"config": ODD, "label": "a b 'c'"}


async def test_stale_expected_version_is_a_conflict(broker_url: str, tmp_path: Path) -> None:
    async with running_twin(broker_url, tmp_path / "twin.db") as run:
        async with collect(run.app_bus, topics.twin_errors("lamp")) as errors:
            first = await run.client.set("lamp", {"level": 1}, expected_version=0)
            assert first.ok
            stale = await run.client.set("lamp", {"level": 2}, expected_version=0)
            assert not stale.ok
            assert stale.error is not None
            assert stale.error.code is TwinErrorCode.CONFLICT
            await errors.wait(lambda ms: ms, "a conflict on the error topic")
        assert errors.decoded(TwinError)[0].code is TwinErrorCode.CONFLICT
        assert (await run.client.get("lamp")).properties["level"].desired.value == 1  # type: ignore[union-attr]


async def test_reported_from_readings_clears_the_delta_and_publishes_it(
    broker_url: str, tmp_path: Path
) -> None:
    async with running_twin(broker_url, tmp_path / "twin.db") as run:
        async with collect(run.app_bus, topics.twin_delta("lamp")) as deltas:
            await run.client.set("lamp", {"level": {"r": 1, "g": 2}})
            await deltas.wait(
                lambda ms: any(decode(TwinDelta, m.payload).delta for m in ms), "an open delta"
            )
            reading = Reading(device="lamp", property="level", value={"r": 1, "g": 2})
            await run.app_bus.publish(topics.reading("lamp", "level"), encode(reading))
            await deltas.wait(
                lambda ms: decode(TwinDelta, ms[-1].payload).delta == {}, "the delta cleared"
            )
        document = await run.client.get("lamp")
        assert document.properties["level"].reported.value == {"r": 1, "g": 2}  # type: ignore[union-attr]


async def test_document_is_retained_for_late_subscribers(broker_url: str, tmp_path: Path) -> None:
    async with running_twin(broker_url, tmp_path / "twin.db") as run:
        await run.client.set("lamp", {"level": 3})
        async with (
            MqttClient(broker_url, client_id="late") as late,
            collect(late, topics.twin_document("lamp")) as docs,
        ):
            await docs.wait(lambda ms: any(m.retain for m in ms), "a retained document")
        assert docs.decoded(TwinDocument)[-1].properties["level"].desired.value == 3  # type: ignore[union-attr]


async def test_get_answers_v5_response_topic_or_body_reply_to(
    broker_url: str, tmp_path: Path
) -> None:
    async with running_twin(broker_url, tmp_path / "twin.db") as run:
        await run.client.set("lamp", {"level": 4})
        bus = run.app_bus
        async with collect(bus, "replies/#") as replies:
            # 3.1.1 style: reply route in the body.
            body = TwinGetRequest(device="lamp", reply_to="replies/body", correlation_id="c-1")
            await bus.publish(topics.twin_get("lamp"), encode(body))
            if bus.is_v5:
                # v5 style: nothing in the body but the device; route in the properties.
                await bus.publish(
                    topics.twin_get("lamp"),
                    encode(TwinGetRequest(device="lamp")),
                    response_topic="replies/v5",
                    correlation_data=b"c-2",
                )
            expected = 2 if bus.is_v5 else 1
            await replies.wait(lambda ms: len(ms) >= expected, f"{expected} get replies")
        by_topic = {m.topic: m for m in replies.messages}
        body_reply = decode(TwinGetResponse, by_topic["replies/body"].payload)
        assert body_reply.correlation_id == "c-1"
        assert body_reply.document.properties["level"].desired.value == 4  # type: ignore[union-attr]
        if bus.is_v5:
            v5 = by_topic["replies/v5"]
            assert v5.correlation_data == b"c-2"
            assert decode(TwinGetResponse, v5.payload).correlation_id == "c-2"


async def test_update_breaking_the_device_model_gets_an_error_reply(
    broker_url: str, tmp_path: Path
) -> None:
    async with running_twin(broker_url, tmp_path / "twin.db", [thermostat()]) as run:
        cases: list[tuple[dict[str, object], str]] = [
            ({"setpoint": 99}, "above the maximum"),
            ({"setpoint": "warm"}, "expected a finite number"),
            ({"temperature": 20}, "ReadOnly"),
            ({"colour": "red"}, "no property"),
        ]
        for values, why in cases:
            result = await run.client.set("thermo", values)
            assert not result.ok
            assert result.error is not None
            assert result.error.code is TwinErrorCode.VALIDATION
            assert why in result.error.reason
        document = await run.client.get("thermo")
        assert document.desired_version == 0
        assert document.properties["setpoint"].type == "double"


async def test_unparsable_payloads_go_to_dead_letter_and_the_twin_keeps_serving(
    broker_url: str, tmp_path: Path
) -> None:
    async with running_twin(broker_url, tmp_path / "twin.db") as run:
        async with collect(run.app_bus, topics.dead_letter("twin")) as letters:
            await run.app_bus.publish(topics.twin_desired_set("lamp"), b"{not json")
            await run.app_bus.publish(topics.twin_get("lamp"), b'{"device": "a/b"}')
            await run.app_bus.publish(topics.reading("lamp", "x"), b"\xff\xfe")
            await letters.wait(lambda ms: len(ms) >= 3, "three dead letters")
        reasons = [letter.reason for letter in letters.decoded(DeadLetter)]
        assert all(reasons)
        assert (await run.client.set("lamp", {"level": 5})).ok


async def test_reading_whose_body_names_another_device_is_dead_lettered_not_reported(
    amqtt_url: str, tmp_path: Path
) -> None:
    async with running_twin(amqtt_url, tmp_path / "twin.db") as run:
        async with collect(run.app_bus, topics.dead_letter("twin")) as letters:
            forged = Reading(device="plc-2", property="t", value=99)
            honest = Reading(device="plc-1", property="t", value=1)
            await run.app_bus.publish(topics.reading("plc-1", "t"), encode(forged))
            await run.app_bus.publish(topics.reading("plc-1", "t"), encode(honest))
            await letters.wait(lambda ms: ms, "the forged reading dead-lettered")
            await wait_for(lambda: "t" in run.twin.store.reported("plc-1"), what="honest one")
        (letter,) = letters.decoded(DeadLetter)
        assert "plc-2" in letter.reason
        assert run.twin.store.reported("plc-2") == {}
