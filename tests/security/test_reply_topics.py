"""No request can make a service publish its answer onto a control topic (reflection).

Services answer with their own, broader credentials; a requester who may not write a desired
set, a device write or a model update must not get a service to write it for them by naming
that topic as its reply topic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bus.mqtt import MqttClient
from mappers.service import MapperService
from mappers.simulators.modbus_plc import ModbusPlcSimulator, RegisterKind
from pipelines.offload import SERVICE as OFFLOAD
from pipelines.offload import OffloadService
from schemas import topics
from schemas.codec import encode
from schemas.frames import pack
from schemas.offload import OffloadRequest
from schemas.readings import DeviceWrite
from schemas.tensor import encode_tensor
from schemas.twin import TwinGetRequest
from tests.security.fuzz import fuzz_topic, observing
from tests.security.test_fuzz_edge_services import MODEL, SETTINGS
from tests.security.test_fuzz_mapper_writes import DEVICE, SMALL, _device
from twin.service import TwinService

CONTROL = (
    topics.twin_desired_set(DEVICE),
    topics.device_write(DEVICE),
    topics.model_update(MODEL),
    topics.fl_global("job"),
)
"""Control topics a requester might try to reflect an answer onto."""


@pytest.mark.parametrize(
    ("topic", "usable"),
    [
        (topics.twin_reply("app"), True),
        (topics.infer_reply("phone-1"), True),
        (topics.device_write_result("plc-1"), True),
        ("apps/line-3/answers", True),
        *((control, False) for control in CONTROL),
        ("ef/infer/replies/", False),
        ("a/#", False),
        ("$SYS/x", False),
        ("", False),
        ("x" * 70_000, False),
    ],
)
def test_only_replies_topics_inside_ef_are_usable(topic: str, usable: bool) -> None:
    assert (topics.reply_topic_refusal(topic) is None) is usable


async def test_twin_mapper_and_offload_refuse_to_answer_on_control_topics(
    mosquitto_url: str, modbus_plc: ModbusPlcSimulator, tmp_path: Path
) -> None:
    async with (
        observing(mosquitto_url) as (bus, observer),
        MqttClient(mosquitto_url, client_id="services") as services,
        TwinService(bus=services, db_path=tmp_path / "twin.db"),
        MapperService([_device(modbus_plc.port)], bus=services),
        OffloadService(SETTINGS, bus=services, nc=None),
    ):
        gets = [encode(TwinGetRequest(device=DEVICE, reply_to=c)) for c in CONTROL]
        writes = [
            encode(DeviceWrite(device=DEVICE, values={"small": 9}, reply_to=c)) for c in CONTROL
        ]
        tensor = encode_tensor(np.zeros((8, 8), dtype=np.float32))
        infers = [pack(OffloadRequest(model=MODEL, reply_to=c), tensor) for c in CONTROL]
        for service, topic, payloads in (
            ("twin", topics.twin_get(DEVICE), gets),
            ("mappers", topics.device_write(DEVICE), writes),
            (OFFLOAD, topics.infer_request(MODEL), infers),
        ):
            letters = await fuzz_topic(
                bus=bus, observer=observer, service=service, topic=topic, payloads=payloads
            )
            assert all("not a replies topic" in letter.reason for letter in letters)
        # Nothing was answered onto a control topic (only the test's own publishes are there),
        # and no write reached the device.
        ours = {b"probe", *writes}
        assert not [p for c in CONTROL for p in observer.seen.get(c, []) if p not in ours]
        assert await modbus_plc.get(RegisterKind.HOLDING, SMALL, 1) == [0]
