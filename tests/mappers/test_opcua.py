"""The OPC UA mapper against a real asyncua server: subscriptions, writes, security, restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bus.mqtt import MqttClient
from bus.ports import free_port
from mappers.device import DeviceInstance
from mappers.service import MapperService
from mappers.simulators.certs import make_certificate
from mappers.simulators.opcua_machine import APPLICATION_URI, OpcUaMachineSimulator
from schemas import topics
from schemas.codec import encode
from schemas.readings import (
    DeviceState,
    DeviceStatus,
    DeviceWrite,
    DeviceWriteResult,
    Reading,
    WriteErrorCode,
)
from tests.support import collect

PROPS: list[dict[str, Any]] = [
    {"name": "speed", "opcua": {"nodeID": "ns=2;s=Spindle.Speed"}, "accessMode": "ReadWrite"},
    {"name": "temperature", "opcua": {"nodeID": "ns=2;i=1001"}},
    {"name": "vibration", "opcua": {"browseName": "2:Machine/2:Vibration"}},
    {"name": "setpoint", "opcua": {"nodeID": "ns=2;i=1002"}, "accessMode": "ReadWrite"},
]


def machine(url: str, **connection: Any) -> DeviceInstance:
    return DeviceInstance.model_validate(
        {
            "name": "mill",
            "protocol": "opcua",
            "opcua": {"url": url, "backoff_initial_s": 0.1, "backoff_max_s": 0.5, **connection},
            "collect_cycle_ms": 100,
            "properties": PROPS,
        }
    )


@pytest.fixture
async def opcua_machine() -> AsyncIterator[OpcUaMachineSimulator]:
    sim = OpcUaMachineSimulator(port=free_port())
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def _values(readings: list[Reading], prop: str) -> list[object]:
    return [r.value for r in readings if r.property == prop]


async def test_subscriptions_deliver_changes_for_every_node_id_notation_and_writes_are_typed(
    amqtt_url: str, opcua_machine: OpcUaMachineSimulator
) -> None:
    sim = opcua_machine
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        collect(bus, topics.readings_filter("mill")) as readings,
        collect(bus, topics.device_write_result("mill")) as results,
        MapperService([machine(sim.url)], bus=bus) as service,
    ):
        await readings.wait(lambda ms: len(ms) >= 4, "initial values of all four nodes")
        assert service.mapper("mill")._watching.is_set()  # subscribed, not polling
        await sim.set("Vibration", 3.5)
        await sim.set("Temperature", 42.0)
        await readings.wait(
            lambda ms: (
                3.5 in _values(readings.decoded(Reading), "vibration")
                and 42.0 in _values(readings.decoded(Reading), "temperature")
            ),
            "pushed changes",
        )
        # JSON ints become the node's Double; an int for the Int32 node stays exact.
        write = DeviceWrite(
            device="mill", values={"speed": 1500, "setpoint": 900, "temperature": 1}
        )
        await bus.publish(topics.device_write("mill"), encode(write))
        await results.wait(lambda ms: ms, "write result")
        (result,) = results.decoded(DeviceWriteResult)
        assert result.written == {"speed": 1500.0, "setpoint": 900}
        assert result.error_code("temperature") is WriteErrorCode.READ_ONLY
        assert await sim.get("SpindleSpeed") == 1500.0
        assert await sim.get("Setpoint") == 900


async def test_a_write_outside_the_node_type_is_refused_before_the_device(
    amqtt_url: str, opcua_machine: OpcUaMachineSimulator
) -> None:
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        collect(bus, topics.device_write_result("mill")) as results,
        MapperService([machine(opcua_machine.url)], bus=bus),
    ):
        write = DeviceWrite(device="mill", values={"setpoint": 2**40, "speed": "fast"})
        await bus.publish(topics.device_write("mill"), encode(write))
        await results.wait(lambda ms: ms, "write result")
        (result,) = results.decoded(DeviceWriteResult)
        assert result.error_code("setpoint") is WriteErrorCode.OUT_OF_RANGE
        assert result.error_code("speed") is WriteErrorCode.INVALID_VALUE


@pytest.mark.slow
async def test_a_server_restart_is_recovered_and_resubscribed(
    amqtt_url: str, opcua_machine: OpcUaMachineSimulator
) -> None:
    sim = opcua_machine
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        collect(bus, topics.readings_filter("mill")) as readings,
        collect(bus, topics.device_status("mill")) as statuses,
        MapperService([machine(sim.url)], bus=bus),
    ):
        await readings.wait(lambda ms: len(ms) >= 4, "initial values")
        await sim.stop()
        await statuses.wait(
            lambda ms: any(s.state is DeviceState.OFFLINE for s in statuses.decoded(DeviceStatus)),
            "offline after the server stopped",
        )
        await sim.start()
        await sim.set("Vibration", 7.25)
        await readings.wait(
            lambda ms: 7.25 in _values(readings.decoded(Reading), "vibration"),
            "pushed values after the restart",
        )
        assert statuses.decoded(DeviceStatus)[-1].state is DeviceState.ONLINE


async def test_username_and_basic256sha256_sign_and_encrypt_connect(
    amqtt_url: str, tmp_path: Path
) -> None:
    server_cert, server_key = make_certificate(tmp_path, "server", application_uri=APPLICATION_URI)
    client_cert, client_key = make_certificate(
        tmp_path, "client", application_uri="urn:edgefabric:mapper"
    )
    sim = OpcUaMachineSimulator(
        port=free_port(),
        certificate=server_cert,
        private_key=server_key,
        users={"operator": "s3cret"},
    )
    async with sim:
        await sim.set("Temperature", 33.0)
        device = machine(
            sim.url,
            securityPolicy="Basic256Sha256",
            securityMode="SignAndEncrypt",
            certificate=str(client_cert),
            privateKey=str(client_key),
            userName="operator",
            password="s3cret",
        )
        wrong = machine(sim.url, userName="operator", password="wrong").model_copy(
            update={"name": "intruder"}
        )
        async with (
            MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
            collect(bus, topics.reading("mill", "temperature")) as readings,
            collect(bus, topics.device_status("intruder")) as statuses,
            MapperService([device, wrong], bus=bus),
        ):
            await readings.wait(lambda ms: ms, "a reading over the encrypted session")
            assert readings.decoded(Reading)[0].value == 33.0
            await statuses.wait(lambda ms: ms, "the intruder's status")
            assert statuses.decoded(DeviceStatus)[0].state is DeviceState.OFFLINE
