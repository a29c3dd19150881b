"""The write path against a real pymodbus server: the contract the twin relies on."""

from __future__ import annotations

from bus.mqtt import MqttClient
from bus.ports import free_port
from mappers.device import DeviceInstance
from mappers.service import MapperService
from mappers.simulators.modbus_plc import ModbusPlcSimulator, RegisterKind
from schemas import topics
from schemas.codec import encode
from schemas.readings import DeviceWrite, DeviceWriteResult, Reading, WriteErrorCode
from schemas.status import DeadLetter
from tests.mappers.helpers import modbus_device
from tests.support import collect

RW = {"accessMode": "ReadWrite"}


def _plc_device(port: int) -> DeviceInstance:
    return modbus_device(
        port,
        ("setpoint", {"offset": 10, "scale": 0.1}, {**RW, "type": "double", "max": 300}),
        ("flow", {"offset": 20, "dataType": "float32", "isRegisterSwap": True}, RW),
        ("total", {"offset": 30, "dataType": "int64", "isSwap": True}, RW),
        ("pump", {"register": "CoilRegister", "offset": 5}, {**RW, "type": "boolean"}),
        ("label", {"offset": 40, "dataType": "string", "limit": 4}, RW),
        ("temperature", {"offset": 0, "scale": 0.1}, {}),
        ("counter", {"register": "InputRegister", "offset": 3}, RW),
        ("small", {"offset": 50, "dataType": "int16"}, RW),
        ("ghost", {"offset": 1500}, RW),
        collect_cycle_ms=60_000,
    )


async def _request(
    bus: MqttClient, device: str, values: dict[str, object], **kw: object
) -> DeviceWriteResult:
    write = DeviceWrite(device=device, values=values, **kw)
    reply = write.reply_to or topics.device_write_result(device)
    async with collect(bus, reply) as replies:
        await bus.publish(topics.device_write(device), encode(write))
        await replies.wait(lambda ms: ms, "a write result")
    (result,) = replies.decoded(DeviceWriteResult)
    return result


async def test_write_converts_values_to_registers_and_replies_with_read_back(
    amqtt_url: str, modbus_plc: ModbusPlcSimulator
) -> None:
    device = _plc_device(modbus_plc.port)
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        MqttClient(amqtt_url, client_id="twin", protocol="3.1.1") as twin,
        MapperService([device], bus=bus),
    ):
        result = await _request(
            twin,
            "plc",
            {"setpoint": 42.5, "flow": 1.25, "total": -5_000_000_000, "pump": True, "label": "ab"},
            correlation_id="c-1",
        )
        assert result.ok, result.errors
        assert result.correlation_id == "c-1"
        assert result.written == {
            "setpoint": 42.5,
            "flow": 1.25,
            "total": -5_000_000_000,
            "pump": True,
            "label": "ab",
        }
        assert await modbus_plc.get(RegisterKind.HOLDING, 10, 1) == [425]
        # float32 1.25 = 0x3FA00000, low word first because of isRegisterSwap
        assert await modbus_plc.get(RegisterKind.HOLDING, 20, 2) == [0x0000, 0x3FA0]
        assert await modbus_plc.get(RegisterKind.COIL, 5, 1) == [True]
        assert await modbus_plc.get(RegisterKind.HOLDING, 40, 4) == [0x6162, 0, 0, 0]


async def test_write_publishes_a_fresh_reading_before_the_result(
    amqtt_url: str, modbus_plc: ModbusPlcSimulator
) -> None:
    device = _plc_device(modbus_plc.port)
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        MqttClient(amqtt_url, client_id="twin", protocol="3.1.1") as twin,
        MapperService([device], bus=bus),
        collect(twin, topics.reading("plc", "setpoint")) as readings,
    ):
        await _request(twin, "plc", {"setpoint": 12.3})
        await readings.wait(
            lambda ms: any(r.value == 12.3 for r in readings.decoded(Reading)), "fresh reading"
        )


async def test_write_errors_name_the_reason_per_property(
    amqtt_url: str, modbus_plc: ModbusPlcSimulator
) -> None:
    device = _plc_device(modbus_plc.port)
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        MqttClient(amqtt_url, client_id="twin", protocol="3.1.1") as twin,
        MapperService([device], bus=bus),
    ):
        result = await _request(
            twin,
            "plc",
            {
                "setpoint": 301,  # above max
                "small": 40_000,  # does not fit int16
                "temperature": 20,  # ReadOnly in the model
                "counter": 1,  # input registers cannot be written
                "ghost": 1,  # the device refuses: address not mapped
                "nope": 1,  # unknown
                "label": "too long for 4 registers",
                "flow": "abc",
                "pump": False,  # fine: other failures do not stop it
            },
        )
        codes = {name: result.error_code(name) for name in result.errors}
        assert codes == {
            "setpoint": WriteErrorCode.OUT_OF_RANGE,
            "small": WriteErrorCode.OUT_OF_RANGE,
            "temperature": WriteErrorCode.READ_ONLY,
            "counter": WriteErrorCode.READ_ONLY,
            "ghost": WriteErrorCode.REFUSED,
            "nope": WriteErrorCode.UNKNOWN_PROPERTY,
            "label": WriteErrorCode.OUT_OF_RANGE,
            "flow": WriteErrorCode.INVALID_VALUE,
        }
        assert result.written == {"pump": False}


async def test_write_to_an_unreachable_device_answers_unavailable(amqtt_url: str) -> None:
    device = _plc_device(free_port())  # nothing listens there
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        MqttClient(amqtt_url, client_id="twin", protocol="3.1.1") as twin,
        MapperService([device], bus=bus),
    ):
        result = await _request(twin, "plc", {"setpoint": 1}, reply_to="app/replies/x")
        assert result.error_code("setpoint") is WriteErrorCode.UNAVAILABLE


async def test_write_result_carries_v5_correlation_data_and_honours_reply_to(
    broker_url: str, modbus_plc: ModbusPlcSimulator
) -> None:
    device = _plc_device(modbus_plc.port)
    async with (
        MqttClient(broker_url, client_id="mapper") as bus,
        MqttClient(broker_url, client_id="twin") as twin,
        MapperService([device], bus=bus),
        collect(twin, "app/replies/1") as replies,
    ):
        write = DeviceWrite(
            device="plc", values={"setpoint": 1}, reply_to="app/replies/1", correlation_id="abc"
        )
        await twin.publish(topics.device_write("plc"), encode(write), correlation_data=b"abc")
        await replies.wait(lambda ms: ms, "reply on reply_to")
        (reply,) = replies.messages
        assert DeviceWriteResult.model_validate_json(reply.payload).correlation_id == "abc"
        if twin.is_v5:
            assert reply.correlation_data == b"abc"


async def test_invalid_write_payloads_go_to_the_dead_letter_topic(
    amqtt_url: str, modbus_plc: ModbusPlcSimulator
) -> None:
    device = _plc_device(modbus_plc.port)
    async with (
        MqttClient(amqtt_url, client_id="mapper", protocol="3.1.1") as bus,
        MqttClient(amqtt_url, client_id="twin", protocol="3.1.1") as twin,
        MapperService([device], bus=bus),
        collect(twin, topics.dead_letter("mappers")) as letters,
    ):
        await twin.publish(topics.device_write("plc"), b"not json")
        other = DeviceWrite(device="other", values={"setpoint": 1})
        await twin.publish(topics.device_write("plc"), encode(other))
        await letters.wait(lambda ms: len(ms) == 2, "two dead letters")
        reasons = [d.reason for d in letters.decoded(DeadLetter)]
        assert "invalid DeviceWrite" in reasons[0]
        assert "other" in reasons[1]
        assert (await _request(twin, "plc", {"setpoint": 2})).ok
