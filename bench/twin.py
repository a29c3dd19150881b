"""Bench of the device twin: persisted updates/s and desired -> device -> reported latency.

Run: python -m bench.twin [--broker mosquitto|amqtt] [--readings 20000] [--rounds 500] [--warmup 50]

Figures from one run on one machine, each beside a baseline measured in the same run:
  * raw broker: QoS 1 publish -> subscriber msg/s, and a request/response round trip (the floor);
  * reported updates/s into the twin (SQLite WAL, committed per batch), flooded as readings;
  * the store alone (report_many, batches of 500), to show what the bus costs;
  * desired sets/s acknowledged after the commit (sequential, one client), p50/p99;
  * desired -> DeviceWrite -> Modbus register (pymodbus simulator) -> read-back reading ->
    delta empty, p50/p99, with the real Modbus mapper.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import broker, percentile
from bus.mqtt import MqttClient
from bus.ports import free_port
from mappers.device import DeviceInstance, ModbusConnection, ModbusVisitor, PropertySpec
from mappers.service import MapperService
from mappers.simulators.modbus_plc import ModbusPlcSimulator
from schemas import topics
from schemas.codec import decode, encode
from schemas.readings import Reading
from schemas.twin import TwinDelta, TwinSource
from twin.client import TwinClient
from twin.service import TwinService
from twin.store import TwinStore


async def raw_rate(url: str, count: int) -> float:
    async with (
        MqttClient(url, client_id="raw-sub") as sub_bus,
        MqttClient(url, client_id="raw-pub") as pub,
        sub_bus.subscribe("bench/raw", maxsize=count + 10) as sub,
    ):
        started = time.perf_counter()

        async def receive() -> None:
            for _ in range(count):
                await anext(sub)

        receiver = asyncio.create_task(receive())
        for i in range(0, count, 100):
            await asyncio.gather(
                *(pub.publish("bench/raw", b"x") for _ in range(min(100, count - i)))
            )
        await asyncio.wait_for(receiver, 60)
        return count / (time.perf_counter() - started)


async def raw_round_trips(url: str, rounds: int) -> list[float]:
    async with (
        MqttClient(url, client_id="rt-a") as a,
        MqttClient(url, client_id="rt-b") as b,
        a.subscribe("bench/rt/pong") as pongs,
        b.subscribe("bench/rt/ping") as pings,
    ):

        async def echo() -> None:
            async for message in pings:
                await b.publish("bench/rt/pong", message.payload)

        task = asyncio.create_task(echo())
        out = []
        for _ in range(rounds):
            started = time.perf_counter()
            await a.publish("bench/rt/ping", b"x")
            await asyncio.wait_for(anext(pongs), 10)
            out.append(time.perf_counter() - started)
        task.cancel()
        return out


async def twin_updates(url: str, db: Path, count: int) -> float:
    async with (
        MqttClient(url, client_id="twin") as bus,
        MqttClient(url, client_id="flood") as pub,
        TwinService(bus=bus, db_path=db) as twin,
    ):
        payloads = [
            (
                topics.reading(f"dev-{i % 10}", f"p{i % 7}"),
                encode(Reading(device=f"dev-{i % 10}", property=f"p{i % 7}", value=i)),
            )
            for i in range(count)
        ]
        started = time.perf_counter()
        for i in range(0, count, 200):
            await asyncio.gather(*(pub.publish(t, p) for t, p in payloads[i : i + 200]))
        async with asyncio.timeout(120):
            while twin.updates < count:
                await asyncio.sleep(0.005)
        return count / (time.perf_counter() - started)


def store_only(db: Path, count: int) -> float:
    store = TwinStore(db)
    rows = [(f"dev-{i % 10}", f"p{i % 7}", i, float(i)) for i in range(count)]
    started = time.perf_counter()
    for i in range(0, count, 500):
        store.report_many(rows[i : i + 500])
    store.close()
    return count / (time.perf_counter() - started)


async def desired_sets(url: str, db: Path, rounds: int) -> list[float]:
    async with (
        MqttClient(url, client_id="twin") as bus,
        MqttClient(url, client_id="app") as app,
        TwinService(bus=bus, db_path=db),
        TwinClient(app, name="bench", source=TwinSource.APP) as client,
    ):
        out = []
        for i in range(rounds):
            started = time.perf_counter()
            result = await client.set("lamp", {"level": i, "note": f"round {i}"})
            out.append(time.perf_counter() - started)
            assert result.ok
        return out


def plc_device(port: int) -> DeviceInstance:
    return DeviceInstance(
        name="plc",
        modbus=ModbusConnection(port=port, timeout_s=1.0),
        collectCycle=60_000,
        properties=[
            PropertySpec(
                name="setpoint",
                type="double",
                accessMode="ReadWrite",
                modbus=ModbusVisitor(offset=10, scale=0.1),
            )
        ],
    )


async def desired_to_reported(url: str, db: Path, rounds: int) -> list[float]:
    async with ModbusPlcSimulator(port=free_port()) as plc:
        device = plc_device(plc.port)
        async with (
            MqttClient(url, client_id="twin") as bus,
            MqttClient(url, client_id="mapper") as mapper_bus,
            MqttClient(url, client_id="app") as app,
            TwinService(bus=bus, db_path=db, devices=[device]),
            MapperService([device], bus=mapper_bus),
            TwinClient(app, name="bench") as client,
            app.subscribe(topics.twin_delta("plc"), maxsize=10_000) as deltas,
        ):
            out = []
            for i in range(rounds):
                value = round(10 + (i % 500) * 0.1, 1)
                started = time.perf_counter()
                assert (await client.set("plc", {"setpoint": value})).ok
                async with asyncio.timeout(10):
                    while True:
                        delta = decode(TwinDelta, (await anext(deltas)).payload)
                        if not delta.delta and delta.desired_version == i + 1:
                            break
                out.append(time.perf_counter() - started)
            return out


async def cloud_to_reported(url: str, tmp: Path, rounds: int) -> list[float]:
    """Cloud desired -> hub -> leaf -> bridge -> twin -> Modbus -> reported document in cloud."""
    from bus.nats_server import HubSpec, LeafSpec, NatsServer
    from edgefabric.config import EdgeConfig
    from edgefabric.edge import Edge
    from twin.cloud import CloudTwins

    hub = NatsServer(
        HubSpec(
            name="hub",
            port=free_port(),
            leafnode_port=free_port(),
            monitor_port=free_port(),
            store_dir=tmp / "hub",
        )
    )
    leaf_port = free_port()
    assert isinstance(hub.spec, HubSpec)
    leaf = NatsServer(
        LeafSpec(
            edge_id="edge-1",
            port=leaf_port,
            monitor_port=free_port(),
            store_dir=tmp / "leaf",
            hub_leaf_urls=(f"nats-leaf://127.0.0.1:{hub.spec.leafnode_port}",),
        )
    )
    config = EdgeConfig.model_validate(
        {
            "edge_id": "edge-1",
            "data_dir": str(tmp / "edge"),
            "broker": {"embedded": False, "url": url},
            "leaf": {"run": False, "port": leaf_port},
        }
    )
    async with hub, leaf, ModbusPlcSimulator(port=free_port()) as plc:
        await hub.wait_leaf_connected(timeout=15)
        async with Edge(config, extra_devices=[plc_device(plc.port)]), CloudTwins(hub.url) as cloud:
            out = []
            for i in range(rounds):
                value = round(10 + (i % 500) * 0.1, 1)  # register resolution
                started = time.perf_counter()
                cloud.set_desired("edge-1", "plc", {"setpoint": value})
                async with asyncio.timeout(30):
                    while True:
                        doc = cloud.document("edge-1", "plc")
                        prop = doc.properties.get("setpoint") if doc else None
                        if (
                            prop is not None
                            and prop.desired is not None
                            and prop.desired.value == value
                            and doc is not None
                            and not doc.delta()
                        ):
                            break
                        await asyncio.sleep(0.0005)
                out.append(time.perf_counter() - started)
            return out


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:8.2f}"


async def main(kind: str, readings: int, rounds: int, warmup: int) -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        async with broker(kind) as url:
            raw = await raw_rate(url, readings)
            # The first rounds pay for connections, caches and pymodbus start-up: not measured.
            rt = (await raw_round_trips(url, rounds + warmup))[warmup:]
            updates = await twin_updates(url, tmp / "updates.db", readings)
            alone = store_only(tmp / "store.db", readings)
            sets = (await desired_sets(url, tmp / "sets.db", rounds + warmup))[warmup:]
            e2e = (await desired_to_reported(url, tmp / "e2e.db", rounds + warmup))[warmup:]
            cloud_rounds = max(1, rounds // 5)
            cloud = (await cloud_to_reported(url, tmp / "cloud", cloud_rounds + warmup))[warmup:]
    rt_p50 = statistics.median(rt)
    print(f"broker: {kind}; readings {readings}, rounds {rounds} (+{warmup} warm-up, not counted)")
    print(f"{'figure':52} {'value':>12} {'vs baseline':>12}")
    print(f"{'raw QoS 1 publish -> subscriber (msg/s) [baseline]':52} {raw:12.0f}")
    print(f"{'twin reported updates/s, persisted':52} {updates:12.0f} {updates / raw:11.2f}x")
    print(f"{'store alone, report_many x500 (rows/s)':52} {alone:12.0f} {alone / raw:11.2f}x")
    print(f"{'raw request/response p50 / p99 (ms) [baseline]':52} {ms(rt, 0.5)} {ms(rt, 0.99)}")
    print(
        f"{'desired set acked after commit p50 / p99 (ms)':52} {ms(sets, 0.5)} {ms(sets, 0.99)}"
        f"  p50 {statistics.median(sets) / rt_p50:.1f}x"
    )
    print(f"{'desired sets/s (sequential, one client)':52} {len(sets) / sum(sets):12.0f}")
    print(
        f"{'desired -> modbus write -> reported, delta empty':52} {ms(e2e, 0.5)} {ms(e2e, 0.99)}"
        f"  p50 {statistics.median(e2e) / rt_p50:.1f}x"
    )
    print(
        f"{'cloud desired -> hub -> edge -> register -> cloud':52} {ms(cloud, 0.5)} "
        f"{ms(cloud, 0.99)}  p50 {statistics.median(cloud) / rt_p50:.1f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", choices=["mosquitto", "amqtt"], default="mosquitto")
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50, help="rounds run first, not counted")
    args = parser.parse_args()
    asyncio.run(main(args.broker, args.readings, args.rounds, args.warmup))
