"""Bench of the cloud bridge: backlog drain, resume after an outage, overhead, 20 edges.

Run: python -m bench.bridge [--backlog 100000] [--resumes 6] [--edges 20] [--per-edge 5000]

All in one run, real hub and leaf nats-servers and Mosquitto on loopback:
  * baseline: bare JetStream publishes (pipelined, 512 in flight) from a client of the leaf to
    the hub's EF_UP stream through the same leaf link;
  * ingest: the backlog built through MQTT while the hub is down (msg/s stored on the edge);
  * drain: after the hub comes back, msg/s from the first to the last message confirmed stored
    in the cloud, and the same including the leaf's reconnect;
  * cloud consumer: msg/s read exactly once by `CloudConsumer` after the drain;
  * resume: time from the link returning (hub restarted and healthy / TCP proxy un-black-holed)
    to the first new message at the cloud consumer, alternating both kinds, median and max;
  * N edges: N leaf servers and N in-process bridges into one hub, each with a backlog built
    while the hub was down: per-edge and total drain msg/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats

from bus.mqtt import MqttClient
from bus.nats_server import HubSpec, LeafSpec, NatsServer
from bus.ports import free_port
from cloud_bridge import headers
from cloud_bridge.bridge import CloudBridge
from cloud_bridge.cloud_consumer import CloudConsumer, ensure_cloud_stream
from cloud_bridge.settings import BridgeSettings, CloudStreamSettings
from schemas import topics
from schemas.bridge import LinkState
from schemas.topics import TrafficClass
from tests.bridge.proxy import BlackHoleProxy

WINDOW = 512
DEVICES = 8


def payload(n: int) -> bytes:
    """A small result message (~60 bytes), with its own message id."""
    return json.dumps({"message_id": f"m{n:08d}", "n": n, "v": 0.5}).encode()


async def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `predicate` every 5 ms; raise with `what` after `timeout` s."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise SystemExit(f"bench: {what} not reached within {timeout} s") from None


@contextlib.contextmanager
def mosquitto(tmp: Path) -> Iterator[str]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\nmax_inflight_messages 1000\nmax_queued_messages 1000000\n"
    )
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(0.3)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(timeout=10)


def hub_spec(tmp: Path, *, advertise: bool = True) -> HubSpec:
    return HubSpec(
        advertise_leaf_urls=advertise,
        name="hub",
        port=free_port(),
        leafnode_port=free_port(),
        monitor_port=free_port(),
        store_dir=tmp / "hub" / "js",
    )


def leaf_spec(tmp: Path, edge: str, hub_port: int) -> LeafSpec:
    return LeafSpec(
        edge_id=edge,
        port=free_port(),
        monitor_port=free_port(),
        store_dir=tmp / edge / "js",
        hub_leaf_urls=(f"nats-leaf://127.0.0.1:{hub_port}",),
    )


def bridge(edge: str, leaf: NatsServer, broker: str) -> CloudBridge:
    bus = MqttClient(broker, client_id=f"{edge}-bridge", clean_session=False, manual_ack=True)
    return CloudBridge(
        BridgeSettings(edge_id=edge, leaf_url=leaf.url, status_interval_s=5), bus=bus
    )


async def bare_jetstream(leaf: NatsServer, count: int) -> float:
    """msg/s of pipelined JetStream publishes from a leaf client to the hub stream."""
    nc = await nats.connect(leaf.url)
    try:
        js = nc.jetstream(domain="cloud", timeout=10)
        subject = topics.uplink("raw", TrafficClass.RESULTS, "p", "dev")
        started = time.perf_counter()
        for start in range(0, count, WINDOW):
            await asyncio.gather(
                *(
                    js.publish(subject, payload(n), headers={headers.MSG_ID: f"raw{n}"})
                    for n in range(start, min(count, start + WINDOW))
                )
            )
        return count / (time.perf_counter() - started)
    finally:
        await nc.close()


async def publish_mqtt(broker: str, start: int, stop: int) -> None:
    """QoS 1 results over a few devices, WINDOW publishes in flight."""
    async with MqttClient(broker, client_id=f"producer-{start}") as client:
        for low in range(start, stop, WINDOW):
            await asyncio.gather(
                *(
                    client.publish(topics.result("p", f"dev-{n % DEVICES}"), payload(n), timeout=60)
                    for n in range(low, min(stop, low + WINDOW))
                )
            )


@contextlib.asynccontextmanager
async def collecting(hub: NatsServer, durable: str) -> AsyncIterator[list[float]]:
    """Run a cloud consumer; yields the arrival times (monotonic) of what it delivers."""
    arrivals: list[float] = []
    async with CloudConsumer(hub.url, durable=durable) as consumer:

        async def run() -> None:
            async for _ in consumer.messages():
                arrivals.append(time.monotonic())

        task = asyncio.create_task(run(), name="bench.bridge.consumer")
        try:
            yield arrivals
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def drain(hub: NatsServer, leaf: NatsServer, broker: str, count: int) -> dict[str, float]:
    """Backlog of `count` built through MQTT while the hub is down, then drained."""
    async with bridge("edge-1", leaf, broker) as b:
        await hub.stop()
        started = time.perf_counter()
        await publish_mqtt(broker, 0, count)
        await wait_until(lambda: b.ingested >= count, 300, "backlog stored on the edge")
        ingest = count / (time.perf_counter() - started)
        await hub.start()
        back = time.perf_counter()
        await wait_until(lambda: b.forwarded > 0, 60, "first forward")
        first = time.perf_counter()
        await wait_until(lambda: b.forwarded >= count, 600, "backlog drained")
        done = time.perf_counter()
    started = time.perf_counter()
    async with collecting(hub, "bench-drain") as arrivals:
        await wait_until(lambda: len(arrivals) >= count, 600, "consumer read all")
    consumer = count / (time.perf_counter() - started)
    return {
        "ingest": ingest,
        "drain": count / (done - first),
        "drain_with_reconnect": count / (done - back),
        "reconnect_s": first - back,
        "consumer": consumer,
    }


async def resume(
    hub: NatsServer, leaf: NatsServer, proxy: BlackHoleProxy, broker: str, rounds: int
) -> tuple[list[float], list[float]]:
    """Resume latency after a hub restart and after a black hole, `rounds` in all."""
    restart: list[float] = []
    blackhole: list[float] = []
    base = 10_000_000
    async with bridge("edge-1", leaf, broker) as b, collecting(hub, "bench-resume") as arrivals:
        # Steady state first: the consumer bound and the link up before the first outage.
        await publish_mqtt(broker, base - 100, base)
        await wait_until(lambda: len(arrivals) >= 100, 60, "warm-up delivered")
        for i in range(rounds):
            start = base + i * 100
            with_blackhole = i % 2 == 1
            if with_blackhole:
                proxy.blackhole()
                await wait_until(lambda: b.link.state is LinkState.DOWN, 30, "link down")
            else:
                await hub.stop()
            await publish_mqtt(broker, start, start + 100)
            queued = (i + 2) * 100
            await wait_until(lambda: b.ingested >= queued, 30, "queued")  # noqa: B023
            before = len(arrivals)
            if b.forwarded >= queued:
                raise SystemExit(f"bench: round {i} forwarded while the link was down")
            if with_blackhole:
                proxy.restore()
            else:
                await hub.start()
            back = time.monotonic()
            await wait_until(lambda: len(arrivals) > before, 60, "first after return")  # noqa: B023
            (blackhole if with_blackhole else restart).append(arrivals[before] - back)
            await wait_until(lambda: len(arrivals) >= before + 100, 60, "round")  # noqa: B023
    return restart, blackhole


async def preload(leaf: NatsServer, edge: str, count: int) -> None:
    """Fill one edge's results queue directly, as ingest stores it."""
    nc = await nats.connect(leaf.url)
    try:
        js = nc.jetstream(domain=edge, timeout=30)
        for low in range(0, count, WINDOW):
            await asyncio.gather(
                *(
                    js.publish(
                        topics.edge_queue(edge, TrafficClass.RESULTS, "p", f"dev-{n % DEVICES}"),
                        payload(n),
                        headers={headers.MSG_ID: f"m{n:08d}", headers.TOPIC: "ef/results/p/d"},
                    )
                    for n in range(low, min(count, low + WINDOW))
                )
            )
    finally:
        await nc.close()


async def many_edges(
    tmp: Path, broker: str, edges: int, per_edge: int
) -> tuple[list[float], float]:
    """`edges` leaves and bridges drain their backlogs into one hub at once."""
    hub = NatsServer(hub_spec(tmp / "fleet"))
    spec = hub.spec
    assert isinstance(spec, HubSpec)
    names = [f"site-{i:02d}" for i in range(edges)]
    leaves = [NatsServer(leaf_spec(tmp / "fleet", n, spec.leafnode_port)) for n in names]
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        nc = await nats.connect(hub.url)
        await ensure_cloud_stream(nc, CloudStreamSettings())
        await nc.close()
        await hub.stop()
        for leaf in leaves:
            await stack.enter_async_context(leaf)
        bridges = [
            await stack.enter_async_context(bridge(n, leaf, broker))
            for n, leaf in zip(names, leaves, strict=True)
        ]
        await asyncio.gather(
            *(preload(leaf, n, per_edge) for n, leaf in zip(names, leaves, strict=True))
        )
        await hub.start()
        await wait_until(lambda: any(b.forwarded for b in bridges), 60, "fleet first forward")
        started = time.perf_counter()
        finished: dict[int, float] = {}

        def all_done() -> bool:
            for i, b in enumerate(bridges):
                if i not in finished and b.forwarded >= per_edge:
                    finished[i] = time.perf_counter()
            return len(finished) == edges

        await wait_until(all_done, 900, "fleet drained")
        total = edges * per_edge / (time.perf_counter() - started)
        per = [per_edge / (finished[i] - started) for i in range(edges)]
    return per, total


def table(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>16}  {ratio:>10}")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as raw, mosquitto(Path(raw)) as broker:
        tmp = Path(raw)
        spec = hub_spec(tmp, advertise=False)
        proxy = BlackHoleProxy(
            port=free_port(), target_host="127.0.0.1", target_port=spec.leafnode_port
        )
        hub = NatsServer(spec)
        leaf_s = LeafSpec(
            edge_id="edge-1",
            port=free_port(),
            monitor_port=free_port(),
            store_dir=tmp / "edge-1" / "js",
            hub_leaf_urls=(f"nats-leaf://127.0.0.1:{proxy.port}",),
        )
        leaf = NatsServer(leaf_s)
        async with proxy, hub, leaf:
            await hub.wait_leaf_connected()
            nc = await nats.connect(hub.url)
            await ensure_cloud_stream(nc, CloudStreamSettings())
            await nc.close()
            bare = statistics.median(
                [await bare_jetstream(leaf, args.backlog // 5) for _ in range(3)]
            )
            d = await drain(hub, leaf, broker, args.backlog)
            restart, blackhole = await resume(hub, leaf, proxy, broker, args.resumes)
        per, total = (
            await many_edges(tmp, broker, args.edges, args.per_edge) if args.edges else ([], 0.0)
        )
    both = restart + blackhole
    rows = [
        ("bare JetStream publish via the leaf (msg/s) [baseline]", f"{bare:,.0f}", "1.00x"),
        (
            f"drain of a {args.backlog:,} backlog (msg/s)",
            f"{d['drain']:,.0f}",
            f"{d['drain'] / bare:.2f}x",
        ),
        (
            "  same, counting the leaf reconnect",
            f"{d['drain_with_reconnect']:,.0f}",
            f"{d['drain_with_reconnect'] / bare:.2f}x",
        ),
        ("  leaf reconnect after hub start (s)", f"{d['reconnect_s']:.2f}", ""),
        (
            "ingest MQTT -> edge queue, hub down (msg/s)",
            f"{d['ingest']:,.0f}",
            f"{d['ingest'] / bare:.2f}x",
        ),
        (
            "cloud consumer, exactly once (msg/s)",
            f"{d['consumer']:,.0f}",
            f"{d['consumer'] / bare:.2f}x",
        ),
        (
            f"resume after hub restart, median / max of {len(restart)} (s)",
            f"{statistics.median(restart):.2f} / {max(restart):.2f}",
            "",
        ),
        (
            f"resume after black hole, median / max of {len(blackhole)} (s)",
            f"{statistics.median(blackhole):.2f} / {max(blackhole):.2f}",
            "",
        ),
        (
            f"resume, all {len(both)}, median / max (s)",
            f"{statistics.median(both):.2f} / {max(both):.2f}",
            "",
        ),
    ]
    if per:
        rows += [
            (
                f"{args.edges} edges into one hub, total (msg/s)",
                f"{total:,.0f}",
                f"{total / bare:.2f}x",
            ),
            (
                "  per edge, median / min (msg/s)",
                f"{statistics.median(per):,.0f} / {min(per):,.0f}",
                "",
            ),
        ]
    table(rows)


def cli() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__)
    p.add_argument("--backlog", type=int, default=100_000)
    p.add_argument("--resumes", type=int, default=6)
    p.add_argument("--edges", type=int, default=20)
    p.add_argument("--per-edge", type=int, default=5_000)
    asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    cli()
