"""Streaming pipelines over a real broker: windows, features, models, batching, results."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from bus.mqtt import MqttClient
from pipelines.digits import bundled_models
from pipelines.features import FeatureExtractor, FeatureSettings, band_energies, feature_length
from pipelines.service import PipelineService
from pipelines.settings import PipelinesSettings, StreamingPipelineSettings
from pipelines.streaming import StreamingPipeline
from schemas import topics
from schemas.codec import decode, encode
from schemas.inference import InferenceResult
from schemas.readings import Reading
from tests.support import wait_for


class Results:
    """Collects the results of one pipeline from the bus."""

    def __init__(self) -> None:
        self.seen: list[InferenceResult] = []

    def of(self, device: str) -> list[InferenceResult]:
        return [r for r in self.seen if r.device == device]


@pytest.fixture
async def bus(amqtt_url: str) -> AsyncIterator[MqttClient]:
    async with MqttClient(amqtt_url, client_id="test-bus") as client:
        yield client


@contextlib.asynccontextmanager
async def collecting(bus: MqttClient, pipeline: str) -> AsyncIterator[Results]:
    """Results of `pipeline`, collected from before the block starts until it ends."""
    results = Results()
    async with bus.subscribe(topics.results_filter(pipeline)) as sub, asyncio.TaskGroup() as tg:

        async def collect() -> None:
            async for message in sub:
                results.seen.append(decode(InferenceResult, message.payload))

        task = tg.create_task(collect())
        try:
            yield results
        finally:
            task.cancel()


async def _publish(bus: MqttClient, device: str, prop: str, values: list[float], t0: float = 0):
    for i, value in enumerate(values):
        reading = Reading(device=device, property=prop, value=value, timestamp=t0 + i * 0.01)
        await bus.publish(topics.reading(device, prop), encode(reading), qos=0)


async def test_each_device_matched_by_a_glob_gets_results_from_its_own_window(
    broker_url: str,
):
    settings = StreamingPipelineSettings(
        name="vib", device="press-*", property="vibration", window=8, hop=4
    )
    async with (
        MqttClient(broker_url, client_id="test-bus") as bus,
        MqttClient(broker_url, client_id="pipelines") as pipe_bus,
        PipelineService(PipelinesSettings(streaming=[settings]), bus=pipe_bus) as service,
        collecting(bus, "vib") as results,
    ):
        await _publish(bus, "press-1", "vibration", [0.01] * 8)
        await _publish(bus, "press-2", "vibration", [1.5] * 8)
        await _publish(bus, "lathe-1", "vibration", [1.5] * 8)  # not matched
        await wait_for(lambda: len(results.seen) >= 2, what="one result per press")
    assert service.results == 2
    assert results.of("press-1")[0].label == "normal"
    assert results.of("press-2")[0].label == "anomaly"
    assert not results.of("lathe-1")
    assert results.seen[0].model_version == "1"
    assert results.seen[0].source_timestamp == pytest.approx(0.07)


def test_a_pure_tone_puts_its_energy_in_its_band_and_the_bands_sum_to_the_variance():
    n = 64
    t = np.arange(n)
    tone = 2.0 * np.sin(2 * np.pi * 24 * t / n)  # bin 24 of 32 -> the 3rd of 4 bands
    energies = band_energies(tone, 4)
    assert np.argmax(energies) == 2
    assert energies.sum() == pytest.approx(tone.var(), rel=1e-9)
    assert energies.sum() == pytest.approx(2.0**2 / 2, rel=1e-9)


def test_features_are_concatenated_in_order_and_normalised():
    settings = FeatureSettings(kinds=["stats", "raw"], normalise_mean=[1.0], normalise_std=[2.0])
    row = FeatureExtractor(settings).extract([1.0, 3.0])
    # mean 2, std 1, min 1, max 3, rms sqrt(5), p2p 2, then the raw values
    expected = (np.array([2, 1, 1, 3, math.sqrt(5), 2, 1, 3]) - 1.0) / 2.0
    assert row == pytest.approx(expected.astype(np.float32))
    assert feature_length(settings, 2) == 8


async def test_stats_and_fft_features_over_a_time_window_flag_a_vibration_fault(
    bus: MqttClient,
):
    settings = StreamingPipelineSettings(
        name="fft",
        device="motor-1",
        property="vibration",
        window=64,
        window_s=0.64,
        hop_s=0.32,
        features=FeatureSettings(kinds=["stats", "fft_bands"], bands=4),
    )
    rng = np.random.default_rng(1)
    normal = list(rng.normal(0, 0.04, 128))
    fault = [0.6 * math.sin(2 * math.pi * 20 * i / 64) for i in range(128)]
    async with (
        StreamingPipeline(settings, bus=bus) as pipeline,
        collecting(bus, "fft") as results,
    ):
        await _publish(bus, "motor-1", "vibration", normal, t0=0.0)
        await wait_for(lambda: len(results.seen) >= 2, what="results of normal windows")
        before = len(results.seen)
        await _publish(bus, "motor-1", "vibration", fault, t0=1.28)
        await wait_for(lambda: len(results.seen) >= before + 2, what="results of the fault")
    assert {r.label for r in results.seen[:before]} == {"normal"}
    assert results.seen[-1].label == "anomaly"
    # one result per hop_s of reading time, not per reading
    assert pipeline.results <= 10


async def test_a_model_of_our_own_with_named_outputs_and_class_labels(bus: MqttClient):
    edge, _ = bundled_models()
    names = [f"digit-{i}" for i in range(10)]
    settings = StreamingPipelineSettings(
        name="pixels",
        property="pixel",
        window=64,
        hop=64,
        model_path=edge,
        model_name="digits-edge",
        score_output="probabilities",
        class_labels=names,
    )
    zero = np.zeros((8, 8))
    zero[1:7, 2] = zero[1:7, 5] = zero[1, 2:6] = zero[6, 2:6] = 1.0  # a drawn 0
    async with (
        StreamingPipeline(settings, bus=bus),
        collecting(bus, "pixels") as results,
    ):
        await _publish(bus, "cam-1", "pixel", list(zero.reshape(-1)))
        await wait_for(lambda: results.seen, what="a classification")
    (result,) = results.seen
    assert result.label == "digit-0"
    assert isinstance(result.outputs["probabilities"], list)
    assert len(result.outputs["probabilities"]) == 10
    assert result.score == pytest.approx(max(result.outputs["probabilities"]))


async def test_windows_that_queue_up_are_inferred_in_batches(bus: MqttClient):
    settings = StreamingPipelineSettings(
        name="batch", property="vibration", window=4, hop=1, batch_wait_ms=50, max_batch=64
    )
    async with (
        StreamingPipeline(settings, bus=bus) as pipeline,
        collecting(bus, "batch") as results,
    ):
        for device in range(8):
            await _publish(bus, f"d{device}", "vibration", [0.0] * 10)
        await wait_for(lambda: len(results.seen) >= 8 * 7, what="every window's result")
    assert pipeline.results == 8 * 7
    assert pipeline.batches < pipeline.results / 2


def test_configs_that_cannot_work_are_refused_at_load(tmp_path: Path, bus: MqttClient):
    with pytest.raises(ValueError, match="raw"):
        StreamingPipelineSettings(name="x", property="p", window_s=1.0)
    with pytest.raises(ValueError, match="hop_s needs window_s"):
        StreamingPipelineSettings(name="x", property="p", hop_s=1.0)
    with pytest.raises(ValueError, match="contains"):
        StreamingPipelineSettings(name="x", property="p/#")
    edge, _ = bundled_models()
    wrong_width = StreamingPipelineSettings(name="x", property="p", window=8, model_path=edge)
    with pytest.raises(ValueError, match="64 wide"):
        StreamingPipeline(wrong_width, bus=bus)


async def test_several_pipelines_run_in_one_service_and_share_a_slot_per_model_name(
    bus: MqttClient,
):
    count = StreamingPipelineSettings(name="a", property="vibration", window=4, hop=4)
    twin = StreamingPipelineSettings(name="b", property="vibration", window=4, hop=2)
    stats = StreamingPipelineSettings(
        name="c",
        property="temperature",
        window=8,
        hop=8,
        model_name="temperature-anomaly",
        features=FeatureSettings(kinds=["stats"]),
    )
    settings = PipelinesSettings(streaming=[count, twin, stats])
    async with (
        PipelineService(settings, bus=bus) as service,
        collecting(bus, "a") as a,
        collecting(bus, "b") as b,
        collecting(bus, "c") as c,
    ):
        await _publish(bus, "m-1", "vibration", [0.0] * 8)
        await _publish(bus, "m-1", "temperature", [0.0] * 8)
        await wait_for(lambda: len(a.seen) == 2 and len(b.seen) == 3 and len(c.seen) == 1)
    assert set(service.slots) == {"vibration-anomaly", "temperature-anomaly"}
    assert service.streaming[0].slot is service.streaming[1].slot
    assert service.streaming[2].slot is service.slots["temperature-anomaly"]
    assert service.results == 6
