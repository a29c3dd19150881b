"""KubeEdge apps work unchanged: $hw/events/device topics and message shapes, both id forms.

Mosquitto only: amqtt refuses any client publish to a topic starting with '$' (its reading of
MQTT-4.7.2-1), so KubeEdge's topics cannot cross it; docs/twin.md says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas import topics
from schemas.codec import decode
from schemas.twin import TwinError, TwinErrorCode
from tests.support import collect
from tests.twin.helpers import running_twin
from tests.twin.test_api import thermostat
from twin import kubeedge_topics as ket


async def test_kubeedge_round_trip_with_namespaced_and_plain_ids(
    mosquitto_url: str, tmp_path: Path
) -> None:
    async with running_twin(
        mosquitto_url, tmp_path / "twin.db", [thermostat()], kubeedge=True
    ) as run:
        bus = run.app_bus
        async with collect(bus, "$hw/events/device/#") as seen:
            update = {
                "event_id": "e-1",
                "timestamp": 1700000000000,
                "twin": {
                    "setpoint": {"expected": {"value": "21.5"}, "metadata": {"type": "double"}}
                },
            }
            await bus.publish(ket.twin_update("factory/thermo"), json.dumps(update).encode())
            await seen.wait(
                lambda ms: any(m.topic.endswith("factory/thermo/twin/update/delta") for m in ms),
                "a KubeEdge delta on the namespaced id",
            )
            await bus.publish(ket.twin_get("thermo"), b'{"event_id": "e-2", "timestamp": 1}')
            await seen.wait(
                lambda ms: any(m.topic == ket.twin_get_result("thermo") for m in ms),
                "a get result on the plain id",
            )
            actual = {"twin": {"setpoint": {"actual": {"value": "21.5"}}}}
            await bus.publish(ket.twin_update("factory/thermo"), json.dumps(actual).encode())
            await bus.publish(
                ket.state_update("factory/thermo"), b'{"event_id": "e-3", "state": "online"}'
            )
            await seen.wait(
                lambda ms: any(m.topic.endswith("state/update/result") for m in ms),
                "a state result",
            )
        by_topic = {m.topic: json.loads(m.payload) for m in seen.messages}
        delta = by_topic[ket.twin_update_delta("factory/thermo")]
        assert delta["delta"] == {"setpoint": "21.5"}
        assert delta["twin"]["setpoint"]["expected"]["value"] == "21.5"
        assert delta["twin"]["setpoint"]["expected_version"] == {"cloud": 0, "edge": 1}
        result = by_topic[ket.twin_get_result("thermo")]
        assert result["event_id"] == "e-2"
        assert result["twin"]["setpoint"]["metadata"] == {"type": "double"}
        assert by_topic[ket.twin_update_result("factory/thermo")]["event_id"] in ("e-1", "")
        document = await run.client.get("thermo")
        assert document.desired_version == 1
        assert document.properties["setpoint"].desired.value == 21.5  # type: ignore[union-attr]
        assert document.properties["setpoint"].reported.value == 21.5  # type: ignore[union-attr]
        assert document.delta() == {}
        assert document.state is not None
        assert document.state.value == "online"


async def test_kubeedge_values_may_hold_json_and_bad_ones_are_refused(
    mosquitto_url: str, tmp_path: Path
) -> None:
    async with running_twin(
        mosquitto_url, tmp_path / "twin.db", [thermostat()], kubeedge=True
    ) as run:
        bus = run.app_bus
        async with collect(bus, topics.twin_errors("thermo")) as errors:
            free = {"twin": {"note": {"expected": {"value": '{"a b": "c \\"d\\""}'}}}}
            await bus.publish(ket.twin_update("lamp"), json.dumps(free).encode())
            bad = {"twin": {"setpoint": {"expected": {"value": "999"}}}}
            await bus.publish(ket.twin_update("thermo"), json.dumps(bad).encode())
            await errors.wait(lambda ms: ms, "a validation error for the out-of-range value")
        assert decode(TwinError, errors.messages[0].payload).code is TwinErrorCode.VALIDATION
        lamp = await run.client.get("lamp")
        assert lamp.properties["note"].desired.value == {"a b": 'c "d"'}  # type: ignore[union-attr]


def test_kubeedge_topic_parser_accepts_both_id_forms_and_nothing_else() -> None:
    one = ket.parse("$hw/events/device/plc/twin/update")
    two = ket.parse("$hw/events/device/ns/plc/twin/get")
    assert one is not None
    assert (one.device_id, one.device, one.action) == ("plc", "plc", ket.KubeEdgeAction.TWIN_UPDATE)
    assert two is not None
    assert (two.device_id, two.device, two.action) == ("ns/plc", "plc", ket.KubeEdgeAction.TWIN_GET)
    assert ket.parse("$hw/events/device/a/b/c/twin/update") is None
    assert ket.parse("$hw/events/device/plc/twin/update/delta") is None
    assert ket.parse("ef/twin/plc/get") is None
