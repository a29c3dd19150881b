"""Offload and joint inference with real brokers, a real hub + leaf and real ONNX models."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import numpy as np
import pytest

from bus.mqtt import MqttClient
from pipelines.cloud_inference import CloudInferenceService
from pipelines.digits import DigitsModels, build_models, load_digits_split
from pipelines.hem import HemSettings
from pipelines.model_slot import LoadedModel, ModelSlot, make_session
from pipelines.offload import OffloadService
from pipelines.offload_client import OffloadClient, downscale_to_digit
from pipelines.offload_settings import OffloadModelSettings, OffloadSettings
from schemas import topics
from schemas.codec import decode
from schemas.frames import pack, unpack
from schemas.hard_examples import HardExample
from schemas.offload import OffloadRequest
from schemas.status import DeadLetter
from schemas.tensor import decode_tensor, encode_tensor
from tests.conftest import NatsLink
from tests.support import wait_for


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> DigitsModels:
    return build_models(tmp_path_factory.mktemp("models"))


def _settings(models: DigitsModels, **overrides: object) -> OffloadSettings:
    cfg = {"name": "digits", "model_path": models.edge, "hem": HemSettings(), **overrides}
    return OffloadSettings(models=[OffloadModelSettings(**cfg)])  # type: ignore[arg-type]


async def test_an_offloaded_digit_is_answered_with_label_and_confidence(
    broker_url: str, models: DigitsModels, tmp_path: Path
):
    split = load_digits_split()
    async with (
        MqttClient(broker_url, client_id="edge") as bus,
        OffloadService(_settings(models, cloud_model=None), bus=bus, nc=None),
        MqttClient(broker_url, client_id="phone") as phone_bus,
        OffloadClient(phone_bus, name="phone-1") as phone,
    ):
        answers = [
            await phone.infer("digits", (split.x_test[i] * 16).astype(np.uint8).reshape(8, 8))
            for i in range(20)
        ]
    correct = sum(a.label == int(split.y_test[i]) for i, a in enumerate(answers))
    assert correct >= 14  # the shallow edge model is ~85 % accurate
    assert all(a.error is None and a.confidence is not None for a in answers)
    assert all(0 <= a.confidence <= 1 for a in answers if a.confidence is not None)
    assert all(a.answer is not None and a.answer.edge_result.model_version == "1" for a in answers)


async def test_a_wrong_shape_dtype_or_model_gets_an_error_reply_not_a_crash(
    amqtt_url: str, models: DigitsModels, tmp_path: Path
):
    async with (
        MqttClient(amqtt_url, client_id="edge") as bus,
        OffloadService(_settings(models, cloud_model=None), bus=bus, nc=None) as service,
        OffloadClient(bus, name="phone-2") as phone,
    ):
        wrong_shape = await phone.infer("digits", np.zeros((5, 5), dtype=np.float32))
        wrong_dtype = await phone.infer("digits", np.zeros(64, dtype=np.int32))
        out_of_range = await phone.infer("digits", np.full(64, 7.0, dtype=np.float32))
        unknown = await phone.infer("faces", np.zeros(64, dtype=np.float32))
        fine = await phone.infer("digits", np.zeros(64, dtype=np.float32))
    assert wrong_shape.error is not None and "64" in wrong_shape.error.reason
    assert wrong_dtype.error is not None and "int32" in wrong_dtype.error.reason
    assert out_of_range.error is not None and out_of_range.error.code == "bad_request"
    assert unknown.error is not None and unknown.error.code == "unknown_model"
    assert fine.error is None
    assert service.refused == 4


async def test_a_request_with_nowhere_to_reply_goes_to_the_dead_letter_topic(
    amqtt_url: str, models: DigitsModels, tmp_path: Path
):
    async with (
        MqttClient(amqtt_url, client_id="edge") as bus,
        OffloadService(_settings(models, cloud_model=None), bus=bus, nc=None),
        bus.subscribe(topics.dead_letter("offload")) as letters,
    ):
        await bus.publish(topics.infer_request("digits"), b"not a frame")
        async with asyncio.timeout(5):
            letter = decode(DeadLetter, (await anext(letters)).payload)
    assert "bad magic" in letter.reason


@pytest.fixture
async def cloud_model(nats_link: NatsLink, models: DigitsModels) -> AsyncIterator[ModelSlot]:
    slot = ModelSlot("digits-cloud", LoadedModel("c1", make_session(models.cloud.read_bytes())))
    async with CloudInferenceService(nats_link.hub.url, {"digits-cloud": slot}):
        yield slot


async def _edge_answers(
    broker_url: str,
    link: NatsLink,
    models: DigitsModels,
    tmp_path: Path,
    count: int,
    **overrides: object,
) -> tuple[list[float], OffloadService, list[bool]]:
    split = load_digits_split()
    nc = await nats.connect(link.leaf.url)
    latencies: list[float] = []
    correct: list[bool] = []
    try:
        async with (
            MqttClient(broker_url, client_id="edge") as bus,
            OffloadService(_settings(models, **overrides), bus=bus, nc=nc) as service,
            OffloadClient(bus, name="phone") as phone,
        ):
            for i in range(count):
                started = time.perf_counter()
                answer = await phone.infer("digits", split.x_test[i])
                latencies.append(answer.latency_ms)
                correct.append(answer.label == int(split.y_test[i]))
                assert time.perf_counter() - started < 2.0
    finally:
        await nc.close()
    return latencies, service, correct


async def test_joint_inference_asks_the_cloud_for_hard_samples_only(
    amqtt_url: str,
    nats_link: NatsLink,
    models: DigitsModels,
    cloud_model: ModelSlot,
    tmp_path: Path,
):
    _, service, correct = await _edge_answers(
        amqtt_url, nats_link, models, tmp_path, 60, deadline_ms=2000
    )
    counters = service.model("digits").counters
    assert 0 < counters.hard < counters.samples
    assert counters.cloud_answers == counters.hard
    assert sum(correct) >= 55  # the cloud fixes most of what the edge gets wrong


async def test_a_slow_cloud_costs_no_more_than_the_deadline(
    amqtt_url: str, nats_link: NatsLink, models: DigitsModels, tmp_path: Path
):
    hub = await nats.connect(nats_link.hub.url)

    async def slow(msg: nats.aio.msg.Msg) -> None:
        await asyncio.sleep(0.5)
        await msg.respond(b"{}")

    await hub.subscribe(topics.cloud_infer("digits-cloud"), queue=topics.CLOUD_INFER_QUEUE, cb=slow)
    await hub.flush()
    try:
        latencies, service, _ = await _edge_answers(
            amqtt_url,
            nats_link,
            models,
            tmp_path,
            30,
            hem=HemSettings(method="CloudOnly"),
            deadline_ms=50,
        )
    finally:
        await hub.close()
    counters = service.model("digits").counters
    assert max(latencies) < 400  # never the cloud's 500 ms
    assert counters.cloud_answers == 0
    assert counters.cloud_timeouts >= 3
    assert counters.breaker_skips > 0  # the breaker opened and stopped asking


async def test_a_gone_cloud_is_answered_at_the_edge_and_hard_examples_are_kept(
    amqtt_url: str, nats_link: NatsLink, models: DigitsModels, tmp_path: Path
):
    await nats_link.hub.kill()
    nc = await nats.connect(nats_link.leaf.url)
    split = load_digits_split()
    try:
        async with (
            MqttClient(amqtt_url, client_id="edge") as bus,
            OffloadService(
                _settings(models, hem=HemSettings(method="CloudOnly")),
                bus=bus,
                nc=nc,
            ) as service,
            OffloadClient(bus, name="phone") as phone,
            bus.subscribe(topics.hard_examples("offload-digits"), maxsize=100) as hard,
        ):
            answers = [await phone.infer("digits", split.x_test[i]) for i in range(5)]
            async with asyncio.timeout(5):
                frames = [unpack(HardExample, (await anext(hard)).payload) for _ in range(5)]
    finally:
        await nc.close()
    assert all(a.answer is not None and a.answer.cloud_result is None for a in answers)
    assert all(a.latency_ms < 200 for a in answers)
    assert service.model("digits").counters.cloud_answers == 0
    header, body = frames[0]
    assert header.reason.startswith("CloudOnly")
    assert np.allclose(decode_tensor(body), split.x_test[0])


async def test_repeated_hard_examples_are_sent_once_and_the_budget_holds(
    amqtt_url: str, models: DigitsModels, tmp_path: Path
):
    from pipelines.hard_examples import HardExampleBudget

    budget = HardExampleBudget(per_minute=3)
    async with (
        MqttClient(amqtt_url, client_id="edge") as bus,
        OffloadService(
            _settings(
                models, cloud_model=None, hem=HemSettings(method="CloudOnly"), hard_examples=budget
            ),
            bus=bus,
            nc=None,
        ) as service,
        OffloadClient(bus, name="phone") as phone,
    ):
        image = np.zeros(64, dtype=np.float32)
        for _ in range(3):
            await phone.infer("digits", image)  # the same image three times
        for i in range(5):
            await phone.infer("digits", np.full(64, (i + 1) / 10, dtype=np.float32))
        publisher = service.hard_examples("digits")
        await wait_for(lambda: publisher.counters.published == 3, what="budget reached")
    assert publisher.counters.duplicates == 2
    assert publisher.counters.over_budget == 3


def test_the_phone_side_downscales_any_grey_image_to_the_digit_scale():
    image = np.zeros((64, 48))
    image[8:56, 20:28] = 255  # a vertical stroke: a "1"
    digit = downscale_to_digit(image)
    assert digit.shape == (8, 8)
    assert digit.dtype == np.uint8
    assert digit.max() == 16
    assert digit[:, 3].sum() > digit[:, 0].sum()


def test_request_frames_round_trip():
    header = OffloadRequest(model="digits", reply_to="r", correlation_id="c")
    data = pack(header, encode_tensor(np.arange(64, dtype=np.float32)))
    back, body = unpack(OffloadRequest, data)
    assert back == header
    assert decode_tensor(body).tolist() == list(range(64))


async def test_score_filters_read_a_classifiers_top_probability(models: DigitsModels):
    from pipelines.hem import CrossEntropy, Threshold
    from pipelines.joint import JointInference

    slot = ModelSlot("digits", LoadedModel("1", make_session(models.edge.read_bytes())))
    sample = load_digits_split().x_test[0]
    for hem in (Threshold(0.6), CrossEntropy(0.6)):
        answer = await JointInference(slot, hem=hem, cloud=None).answer(sample)
        confident = answer.edge_result.confidence > 0.9
        assert answer.is_hard_example is not confident, hem.name
