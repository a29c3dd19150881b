"""Bench of the inference pipelines, all in one run on one machine.

Run: python -m bench.pipelines [--broker mosquitto|amqtt] [--requests 2000]

  * edge inference latency: the same ONNX model called bare (onnxruntime `run`, the floor),
    through `ModelSlot.run` (worker thread), and through the whole offload path (MQTT request
    -> OffloadService -> MQTT answer), p50/p99;
  * batching: samples/s when each inference takes one sample vs 32 at a time (what
    micro-batching buys when readings queue up);
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


async def main(kind: str, requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = build_models(root / "models")
        async with broker(kind) as url:
            rows = await latency(models.edge, url, requests, root)
            rows += await joint(root / "models", url, root)
    print(f"broker: {kind}   requests: {requests}")
    print(table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", choices=["mosquitto", "amqtt"], default="mosquitto")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.broker, args.requests))
