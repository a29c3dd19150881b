"""Bench of the inference pipelines, all in one run on one machine.

Run: python -m bench.pipelines [--broker mosquitto|amqtt] [--requests 2000] [--readings 20000]

  * edge inference latency: the same ONNX model called bare (onnxruntime `run`, the floor),
    through `ModelSlot.run` (worker thread), and through the whole offload path (MQTT request
    -> OffloadService -> MQTT answer), p50/p99;
  * batching: samples/s when each inference takes one sample vs 32 at a time (what
    micro-batching buys when readings queue up);
  * streaming pipeline (readings -> window -> model -> result, over the broker): results/s
    when readings arrive faster than single inferences, with micro-batching off
    (max_batch 1) and on (max_batch 32); reading -> result latency p50/p99 at a paced
    1,000 readings/s against a bare onnxruntime call on the same model;
  * joint inference on the held-out digits: accuracy and share sent to the cloud for
    edge-only, cloud-only and joint (Sedna's CrossEntropy at 0.5 and 0.6, Threshold 0.6), the
    cloud model served by a real nats-server through a leaf.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import broker, median, percentile, table
from bus.mqtt import MqttClient
from bus.nats_client import connect
from bus.nats_server import HubSpec, LeafSpec, NatsServer
from bus.ports import free_port
from pipelines.cloud_inference import CloudInferenceService
from pipelines.digits import INPUT, build_models, load_digits_split
from pipelines.hem import HemSettings
from pipelines.model_slot import LoadedModel, ModelSlot, make_session
from pipelines.offload import OffloadService
from pipelines.offload_client import OffloadClient
from pipelines.offload_settings import OffloadModelSettings, OffloadSettings
from pipelines.settings import StreamingPipelineSettings
from pipelines.streaming import StreamingPipeline, default_model
from schemas import topics
from schemas.codec import decode, encode
from schemas.inference import InferenceResult
from schemas.readings import Reading


def ms(values: list[float]) -> str:
    return f"{median(values) * 1000:7.3f} / {percentile(values, 0.99) * 1000:7.3f}"


async def latency(
    edge_model: Path, url: str, requests: int, data_dir: Path
) -> list[tuple[str, str]]:
    split = load_digits_split()
    session = make_session(edge_model.read_bytes())
    slot = ModelSlot("digits", LoadedModel("1", session))
    samples = [split.x_test[i % len(split.x_test)].reshape(1, -1) for i in range(requests)]
    bare, threaded, offload = [], [], []
    for x in samples:
        t = time.perf_counter()
        session.run(None, {INPUT: x})
        bare.append(time.perf_counter() - t)
    for x in samples:
        t = time.perf_counter()
        await slot.run(x)
        threaded.append(time.perf_counter() - t)
    settings = OffloadSettings(
        models=[OffloadModelSettings(name="digits", model_path=edge_model, cloud_model=None)]
    )
    async with (
        MqttClient(url, client_id="bench-edge") as bus,
        OffloadService(settings, bus=bus, nc=None),
        MqttClient(url, client_id="bench-phone") as phone_bus,
        OffloadClient(phone_bus) as phone,
    ):
        for x in samples:
            t = time.perf_counter()
            await phone.infer("digits", x.reshape(64))
            offload.append(time.perf_counter() - t)
    batch = np.concatenate(samples[:32])
    t = time.perf_counter()
    for _ in range(200):
        session.run(None, {INPUT: batch})
    batched_rate = 200 * 32 / (time.perf_counter() - t)
    single_rate = len(bare) / sum(bare)
    return [
        ("edge latency p50 / p99 (ms)", ""),
        ("  bare onnxruntime run (floor)", ms(bare)),
        ("  ModelSlot.run (worker thread)", ms(threaded)),
        ("  offload round trip over MQTT", ms(offload)),
        ("  offload / bare, median", f"{median(offload) / median(bare):7.1f}x"),
        ("samples/s, one per call", f"{single_rate:10.0f}"),
        ("samples/s, 32 per call (micro-batch)", f"{batched_rate:10.0f}"),
        ("  ratio", f"{batched_rate / single_rate:10.1f}x"),
    ]


# A queue big enough that nothing is dropped: the bench measures how fast the backlog drains.
STREAM = StreamingPipelineSettings(
    name="bench", property="vibration", window=32, hop=1, queue_size=1_000_000
)


async def _stream_run(url: str, settings: StreamingPipelineSettings, readings: int, rate: float):
    """Publish `readings` over 10 devices (at `rate`/s, 0 = flat out); results and latencies."""
    devices = 10
    expected = readings - devices * (settings.window - 1)
    latencies: list[float] = []
    done = asyncio.Event()
    async with (
        MqttClient(url, client_id="bench-pipe") as pipe_bus,
        StreamingPipeline(settings, bus=pipe_bus) as pipeline,
        MqttClient(url, client_id="bench-sensors") as bus,
        bus.subscribe(topics.results_filter(settings.name), maxsize=100_000) as results,
    ):

        async def collect() -> None:
            async for message in results:
                result = decode(InferenceResult, message.payload)
                latencies.append(time.time() - result.source_timestamp)
                if len(latencies) >= expected:
                    done.set()
                    return

        async with asyncio.TaskGroup() as tg:
            tg.create_task(collect())
            started = time.perf_counter()
            for i in range(readings):
                device = f"s{i % devices}"
                reading = Reading(device=device, property="vibration", value=0.01 * (i % 7))
                await bus.publish(topics.reading(device, "vibration"), encode(reading), qos=0)
                if rate:
                    await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.perf_counter()))
            async with asyncio.timeout(120):
                await done.wait()
            elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, pipeline.batches


async def streaming(url: str, readings: int) -> list[tuple[str, str]]:
    session = make_session(default_model(STREAM))
    window = np.zeros((1, 32), dtype=np.float32)
    bare = []
    for _ in range(2000):
        t = time.perf_counter()
        session.run(None, {"window": window})
        bare.append(time.perf_counter() - t)
    single = STREAM.model_copy(update={"max_batch": 1})
    batched = STREAM.model_copy(update={"max_batch": 32})
    rate_1, _, calls_1 = await _stream_run(url, single, readings, 0)
    rate_32, _, calls_32 = await _stream_run(url, batched, readings, 0)
    _, paced, _ = await _stream_run(url, batched, 3000, 1000)
    return [
        ("streaming pipeline (window 32, hop 1, 10 devices)", ""),
        ("  results/s flat out, max_batch 1", f"{rate_1:10.0f}   ({calls_1} calls)"),
        ("  results/s flat out, max_batch 32", f"{rate_32:10.0f}   ({calls_32} calls)"),
        ("  ratio", f"{rate_32 / rate_1:10.2f}x"),
        ("  reading -> result at 1,000/s, p50 / p99 (ms)", ms(paced)),
        ("  bare onnxruntime run, same model (ms)", ms(bare)),
    ]


async def joint(models_dir: Path, url: str, data_dir: Path) -> list[tuple[str, str]]:
    models = build_models(models_dir)
    split = load_digits_split()
    hub = NatsServer(
        HubSpec(
            name="hub",
            port=free_port(),
            leafnode_port=free_port(),
            monitor_port=free_port(),
            store_dir=data_dir / "hub",
        )
    )
    rows = [("joint inference on the held-out split", f"{len(split.y_test)} digits")]
    async with hub:
        leaf = NatsServer(
            LeafSpec(
                edge_id="bench",
                port=free_port(),
                monitor_port=free_port(),
                store_dir=data_dir / "leaf",
                hub_leaf_urls=(f"nats-leaf://127.0.0.1:{hub.spec.leafnode_port}",),
            )
        )  # type: ignore[union-attr]
        cloud_slot = ModelSlot(
            "digits-cloud", LoadedModel("1", make_session(models.cloud.read_bytes()))
        )
        async with leaf, CloudInferenceService(hub.url, {"digits-cloud": cloud_slot}):
            await hub.wait_leaf_connected()
            nc = await connect(leaf.url, name="bench-edge")
            try:
                for label, hem in [
                    ("edge only", HemSettings(method="EdgeOnly")),
                    ("cloud only", HemSettings(method="CloudOnly")),
                    ("joint, CrossEntropy 0.5 (Sedna default)", HemSettings()),
                    ("joint, CrossEntropy 0.6", HemSettings(threshold_cross_entropy=0.6)),
                    ("joint, Threshold 0.6", HemSettings(method="Threshold", threshold=0.6)),
                ]:
                    rows.append(
                        (f"  {label}", await _joint_run(url, nc, models.edge, hem, split, data_dir))
                    )
            finally:
                await nc.close()
    return rows


async def _joint_run(url, nc, edge_model, hem, split, data_dir) -> str:
    settings = OffloadSettings(
        models=[OffloadModelSettings(name="digits", model_path=edge_model, hem=hem, deadline_ms=50)]
    )
    correct = cloud = 0
    lat = []
    async with (
        MqttClient(url, client_id="bench-edge-joint") as bus,
        OffloadService(settings, bus=bus, nc=nc),
        OffloadClient(bus) as phone,
    ):
        for x, y in zip(split.x_test, split.y_test, strict=True):
            response = await phone.infer("digits", x)
            lat.append(response.latency_ms / 1000)
            correct += response.label == int(y)
            cloud += bool(response.answer and response.answer.cloud_result)
    n = len(split.y_test)
    p99 = percentile(lat, 0.99) * 1000
    return f"accuracy {correct / n:6.2%}   to cloud {cloud / n:6.1%}   p99 {p99:5.1f} ms"


async def main(kind: str, requests: int, readings: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = build_models(root / "models")
        async with broker(kind) as url:
            rows = await latency(models.edge, url, requests, root)
            rows += await streaming(url, readings)
            rows += await joint(root / "models", url, root)
    print(f"broker: {kind}   requests: {requests}   readings: {readings}")
    print(table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", choices=["mosquitto", "amqtt"], default="mosquitto")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--readings", type=int, default=20_000, help="streaming, flat out")
    args = parser.parse_args()
    asyncio.run(main(args.broker, args.requests, args.readings))
