"""End-to-end bench of the walking skeleton: readings/s through the edge, device->cloud latency.

Run: python -m bench.e2e [--broker amqtt|mosquitto] [--seconds 10]

Three figures from one run on one machine:
  * raw broker round trip: publish -> subscriber, QoS 1, the floor for everything on the bus;
  * readings/s: a publisher floods readings; counted at the twin's store and at a subscriber;
  * device -> cloud latency: a Modbus simulator register read by the mapper, through the
    pipeline, broker, bridge, leaf and hub to a cloud consumer (timestamps in the result).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import broker as bench_broker
from bench.common import percentile
from bus.mqtt import MqttClient
from bus.nats_server import HubSpec, LeafSpec, NatsServer
from bus.ports import free_port
from cloud_bridge.cloud_consumer import CloudConsumer
from edgefabric.cloud import ResultsSink
from edgefabric.config import BrokerSettings, EdgeConfig, LeafSettings
from edgefabric.edge import Edge
from mappers.device import DeviceInstance, ModbusConnection, ModbusVisitor, PropertySpec
from mappers.simulators.modbus_plc import ModbusPlcSimulator
from pipelines.settings import PipelinesSettings, StreamingPipelineSettings
from schemas import topics
from schemas.codec import decode, encode
from schemas.inference import InferenceResult
from schemas.readings import Reading

pct = percentile


async def raw_round_trip(url: str, count: int) -> tuple[float, list[float]]:
    """Msg/s and per-message latency of bare QoS 1 publish -> subscribe on the broker."""
    latencies: list[float] = []
    async with (
        MqttClient(url, client_id="bench-raw-sub") as sub_client,
        MqttClient(url, client_id="bench-raw-pub") as pub,
        sub_client.subscribe("bench/raw/#", maxsize=count + 10) as sub,
    ):
        started = time.perf_counter()

        async def receive() -> None:
            for _ in range(count):
                message = await anext(sub)
                latencies.append(time.perf_counter() - float(message.payload))

        receiver = asyncio.create_task(receive())
        window = 500
        for i in range(0, count, window):
            await asyncio.gather(
                *(
                    pub.publish("bench/raw/x", str(time.perf_counter()).encode())
                    for _ in range(min(window, count - i))
                )
            )
        async with asyncio.timeout(60):
            await receiver
        elapsed = time.perf_counter() - started
    return count / elapsed, latencies


def paho_round_trip(url: str, count: int) -> float:
    """Msg/s of the same QoS 1 round trip with paho-mqtt (threaded loops): the reference."""
    import threading

    import paho.mqtt.client as paho

    host, port = url.removeprefix("mqtt://").split(":")
    done = threading.Event()
    received = [0]

    def on_message(*_: object) -> None:
        received[0] += 1
        if received[0] == count:
            done.set()

    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-paho-sub")
    sub.on_message = on_message
    sub.connect(host, int(port))
    sub.subscribe("bench/paho/#", qos=1)
    sub.loop_start()
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-paho-pub")
    pub.max_inflight_messages_set(500)
    pub.max_queued_messages_set(0)
    pub.connect(host, int(port))
    pub.loop_start()
    time.sleep(0.3)
    started = time.perf_counter()
    for _ in range(count):
        pub.publish("bench/paho/x", b"x" * 100, qos=1)
    done.wait(120)
    elapsed = time.perf_counter() - started
    for client in (pub, sub):
        client.loop_stop()
        client.disconnect()
    return count / elapsed


async def edge_throughput(url: str, count: int, data_dir: Path) -> float:
    """Readings/s published by a flood publisher and all stored by the twin."""
    config = EdgeConfig(
        edge_id="bench",
        data_dir=data_dir,
        broker=BrokerSettings(embedded=False, url=url),
        bridge={"enabled": False},  # type: ignore[arg-type]
    )
    async with Edge(config) as edge, MqttClient(url, client_id="bench-flood") as pub:
        assert edge.twin is not None
        payloads = [
            encode(Reading(device=f"dev-{i % 10}", property=f"p{i % 5}", value=i))
            for i in range(count)
        ]
        started = time.perf_counter()
        window = 500
        for i in range(0, count, window):
            await asyncio.gather(
                *(
                    pub.publish(topics.reading(f"dev-{j % 10}", f"p{j % 5}"), payloads[j])
                    for j in range(i, min(count, i + window))
                )
            )
        async with asyncio.timeout(120):
            while edge.twin.updates < count:
                await asyncio.sleep(0.01)
        return count / (time.perf_counter() - started)


async def reading_to_result(url: str, rate: int, seconds: float, data_dir: Path) -> list[float]:
    """Latency (s) from a reading's timestamp to its inference result on the bus.

    Readings are published at `rate`/s, paced, on one property; the pipeline infers on every
    reading (hop 1) over a window of 32.
    """
    config = EdgeConfig(
        edge_id="bench",
        data_dir=data_dir,
        broker=BrokerSettings(embedded=False, url=url),
        bridge={"enabled": False},  # type: ignore[arg-type]
        pipelines=PipelinesSettings(
            streaming=[
                StreamingPipelineSettings(
                    name="vib", device="press", property="vibration", window=32, hop=1
                )
            ]
        ),
    )
    latencies: list[float] = []
    async with (
        Edge(config),
        MqttClient(url, client_id="bench-rate") as pub,
        MqttClient(url, client_id="bench-results") as sub_client,
        sub_client.subscribe(topics.results_filter("vib"), maxsize=100_000) as results,
    ):

        async def collect() -> None:
            async for message in results:
                result = decode(InferenceResult, message.payload)
                latencies.append(time.time() - result.source_timestamp)

        collector = asyncio.create_task(collect())
        topic = topics.reading("press", "vibration")
        total = int(rate * seconds)
        started = time.perf_counter()
        for i in range(total):
            await pub.publish(
                topic,
                encode(Reading(device="press", property="vibration", value=float(i % 7) / 100)),
            )
            delay = started + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.sleep(0.5)
        collector.cancel()
    return latencies[100:]  # drop the warm-up (window filling, first session runs)


async def device_to_cloud(url: str | None, seconds: float, data_dir: Path) -> list[float]:
    """Latencies (s) from the Modbus read to the result's arrival at a cloud consumer."""
    hub_spec = HubSpec(
        name="hub",
        port=free_port(),
        leafnode_port=free_port(),
        monitor_port=free_port(),
        store_dir=data_dir / "hub",
    )
    leaf_spec = LeafSpec(
        edge_id="bench",
        port=free_port(),
        monitor_port=free_port(),
        store_dir=data_dir / "leaf",
        hub_leaf_urls=(f"nats-leaf://127.0.0.1:{hub_spec.leafnode_port}",),
    )
    sim_port = free_port()
    broker = BrokerSettings(embedded=False, url=url) if url else BrokerSettings(port=free_port())
    config = EdgeConfig(
        edge_id="bench",
        data_dir=data_dir / "edge",
        broker=broker,
        leaf=LeafSettings(run=False, port=leaf_spec.port),
        pipelines=PipelinesSettings(
            streaming=[
                StreamingPipelineSettings(
                    name="vib", device="plc", property="vibration", window=8, hop=1
                )
            ]
        ),
    )
    device = DeviceInstance(
        name="plc",
        modbus=ModbusConnection(port=sim_port),
        collect_cycle_ms=10,
        properties=[PropertySpec(name="vibration", modbus=ModbusVisitor(offset=2, scale=0.001))],
    )
    latencies: list[float] = []
    sink = ResultsSink()
    async with NatsServer(hub_spec) as hub, NatsServer(leaf_spec):
        await hub.wait_leaf_connected()
        async with (
            ModbusPlcSimulator(port=sim_port, live=True, period=0.01),
            CloudConsumer(hub.url, durable="bench") as consumer,
            Edge(config, extra_devices=[device]),
        ):
            deadline = time.monotonic() + seconds
            async for message in consumer.messages():
                result = sink.handle(message)
                if result is not None:
                    latencies.append(time.time() - result.source_timestamp)
                if time.monotonic() > deadline:
                    break
    return latencies[5:]  # drop warm-up


async def main(broker: str, seconds: float, count: int, rate: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        async with bench_broker(broker) as url:
            paho_rate = await asyncio.to_thread(paho_round_trip, url, count)
            raw_rate, raw_lat = await raw_round_trip(url, count)
            edge_rate = await edge_throughput(url, count, tmp / "tp")
            paced = await reading_to_result(url, rate, min(seconds, 10.0), tmp / "rate")
            latencies = await device_to_cloud(
                None if broker == "amqtt" else url, seconds, tmp / "lat"
            )
    ms = [x * 1000 for x in latencies]
    raw_ms = [x * 1000 for x in raw_lat]
    print(f"broker: {broker}   messages: {count}   latency window: {seconds:.0f} s")
    print(f"{'measure':44} {'value':>12}")
    print(f"{'paho-mqtt round trip, reference (msg/s)':44} {paho_rate:12.0f}")
    print(f"{'raw broker round trip, bus.MqttClient (msg/s)':44} {raw_rate:12.0f}")
    print(f"{'  ratio to paho-mqtt':44} {raw_rate / paho_rate:12.2f}")
    print(
        f"{'latency under that flood p50 / p99 (ms)':44} "
        f"{statistics.median(raw_ms):5.2f} / {pct(raw_ms, 0.99):5.2f}"
    )
    print(f"{'readings/s into the twin (persisted)':44} {edge_rate:12.0f}")
    print(f"{'  ratio to raw broker':44} {edge_rate / raw_rate:12.2f}")
    paced_ms = [x * 1000 for x in paced]
    if paced_ms:
        print(
            f"{f'reading->result at {rate}/s p50 / p99 (ms)':44} "
            f"{statistics.median(paced_ms):5.2f} / {pct(paced_ms, 0.99):5.2f}   (n={len(paced_ms)})"
        )
    if ms:
        print(
            f"{'device->cloud latency p50 / p99 (ms)':44} "
            f"{statistics.median(ms):5.1f} / {pct(ms, 0.99):5.1f}   (n={len(ms)})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", choices=["amqtt", "mosquitto"], default="mosquitto")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=1000, help="readings/s for the latency run")
    args = parser.parse_args()
    asyncio.run(main(args.broker, args.seconds, args.count, args.rate))
