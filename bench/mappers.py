"""Mapper bench: readings/s for N devices x M properties, and requests per cycle with merging.

Run: python -m bench.mappers [--broker amqtt|mosquitto] [--seconds 3] [--repeats 3]

Every device is a real pymodbus TCP simulator connection; every reading is published QoS 1
on a real broker and counted by a subscriber. Each scenario runs with register merging on
and off; the "off" run is the baseline of the ratio (one request per property, what a naive
poller — or KubeEdge's Modbus mapper — sends).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time

from bench.common import broker
from bus.mqtt import MqttClient
from bus.ports import free_port
from bus.subscription import Overflow
from mappers.device import DeviceInstance
from mappers.modbus.plan import plan_reads
from mappers.service import MapperService
from mappers.simulators.modbus_plc import ModbusPlcSimulator
from schemas import topics

SCENARIOS = [(1, 10), (10, 10), (10, 100), (50, 20)]
"""(devices, properties per device)."""


def device(name: str, port: int, props: int, *, merge: bool, cycle_ms: int) -> DeviceInstance:
    """A device whose properties are adjacent holding registers."""
    return DeviceInstance.model_validate(
        {
            "name": name,
            "modbus": {"port": port, "merge_reads": merge, "timeout_s": 2},
            "collect_cycle_ms": cycle_ms,
            "properties": [{"name": f"p{i}", "modbus": {"offset": i}} for i in range(props)],
        }
    )


async def run_once(
    url: str, plc: ModbusPlcSimulator, devices: int, props: int, *, merge: bool, seconds: float
) -> tuple[float, float]:
    """(readings/s received by a subscriber, Modbus requests per device per cycle)."""
    fleet = [device(f"d{i}", plc.port, props, merge=merge, cycle_ms=10) for i in range(devices)]
    received = 0
    async with (
        MqttClient(url, client_id="bench-sub") as sub_bus,
        sub_bus.subscribe(
            topics.readings_filter(), maxsize=100_000, overflow=Overflow.DROP_OLDEST
        ) as sub,
        MqttClient(url, client_id="bench-mapper", max_inflight=1000) as bus,
    ):

        async def count() -> None:
            nonlocal received
            async for _ in sub:
                received += 1

        async with asyncio.TaskGroup() as group:
            counter = group.create_task(count(), name="bench.count")
            async with MapperService(fleet, bus=bus) as service:
                await asyncio.sleep(0.5)  # warm-up: connections and first cycle
                start_count = received
                start_requests = sum(m.driver.requests for m in service.mappers)
                start_reads = sum(m.readings for m in service.mappers)
                started = time.perf_counter()
                await asyncio.sleep(seconds)
                elapsed = time.perf_counter() - started
                rate = (received - start_count) / elapsed
                requests = sum(m.driver.requests for m in service.mappers) - start_requests
                cycles = (sum(m.readings for m in service.mappers) - start_reads) / props
            counter.cancel()
    return rate, requests / max(cycles, 1)


async def main(kind: str, seconds: float, repeats: int) -> None:
    """Print the table."""
    print(f"mappers bench: broker={kind}, {seconds}s per run, median of {repeats}")
    header = (
        f"{'devices x props':>16} | {'plan req/cycle on/off':>21} | "
        f"{'req/cycle on':>12} | {'readings/s on':>13} | {'readings/s off':>14} | {'ratio':>5}"
    )
    print(header)
    print("-" * len(header))
    async with broker(kind) as url, ModbusPlcSimulator(port=free_port()) as plc:
        for devices, props in SCENARIOS:
            sample = device("x", plc.port, props, merge=True, cycle_ms=10).properties
            planned_on, planned_off = len(plan_reads(sample)), len(plan_reads(sample, merge=False))
            on: list[tuple[float, float]] = []
            off: list[tuple[float, float]] = []
            for _ in range(repeats):
                on.append(await run_once(url, plc, devices, props, merge=True, seconds=seconds))
                off.append(await run_once(url, plc, devices, props, merge=False, seconds=seconds))
            rate_on = statistics.median(r for r, _ in on)
            rate_off = statistics.median(r for r, _ in off)
            req_on = statistics.median(q for _, q in on)
            print(
                f"{f'{devices} x {props}':>16} | {f'{planned_on} / {planned_off}':>21} | "
                f"{req_on:>12.2f} | {rate_on:>13.0f} | {rate_off:>14.0f} | "
                f"{rate_on / max(rate_off, 1):>5.2f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", choices=["amqtt", "mosquitto"], default="mosquitto")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    asyncio.run(main(args.broker, args.seconds, args.repeats))
