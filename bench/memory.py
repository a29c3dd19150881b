"""Resident memory of an idle edge: `edgefabric edge` and its leaf nats-server, as deployed.

Run: python -m bench.memory [--seconds 10]

Starts a cloud (hub) and a simulated PLC in this process, then the edge as its own process from
a config file (embedded broker, leaf nats-server, Modbus mapper, twin, streaming pipeline,
offload with joint inference, bridge), lets it settle, and sums the RSS of the edge process
tree from /proc. The target (docs/mission): 150 MB for the whole edge stack at idle.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bus.ports import free_port
from edgefabric.cloud import Cloud
from edgefabric.config import CloudConfig, HubSettings
from mappers.simulators.modbus_plc import ModbusPlcSimulator


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        path = task / "children"
        if path.exists():
            found += [int(c) for c in path.read_text().split()]
    return found


def process_tree(pid: int) -> dict[int, str]:
    tree = {pid: Path(f"/proc/{pid}/comm").read_text().strip()}
    for child in children(pid):
        tree |= process_tree(child)
    return tree


def edge_config(root: Path, hub: HubSettings, plc_port: int) -> Path:
    devices = root / "devices.yaml"
    devices.write_text(
        yaml.safe_dump(
            {
                "devices": [
                    {
                        "name": "plc-1",
                        "protocol": "modbus",
                        "modbus": {"host": "127.0.0.1", "port": plc_port},
                        "collect_cycle_ms": 100,
                        "properties": [
                            {
                                "name": "temperature",
                                "modbus": {"offset": 0, "dataType": "int16", "scale": 0.1},
                            },
                            {
                                "name": "vibration",
                                "modbus": {"offset": 2, "dataType": "int16", "scale": 0.001},
                            },
                        ],
                    }
                ]
            }
        )
    )
    config = root / "edge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "edge_id": "mem-site",
                "data_dir": str(root / "edge"),
                "broker": {"port": free_port()},
                "leaf": {
                    "port": free_port(),
                    "monitor_port": free_port(),
                    "hub_leaf_urls": [f"nats-leaf://127.0.0.1:{hub.leafnode_port}"],
                },
                "devices": [str(devices)],
                "pipelines": {
                    "streaming": [{"name": "vib", "device": "plc-1", "property": "vibration"}],
                    "offload": {"models": [{"name": "digits"}]},
                },
            }
        )
    )
    return config


async def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hub = HubSettings(port=free_port(), leafnode_port=free_port(), monitor_port=free_port())
        plc_port = free_port()
        async with (
            Cloud(CloudConfig(data_dir=root / "cloud", hub=hub)),
            ModbusPlcSimulator(port=plc_port, live=True, period=0.1),
        ):
            config = edge_config(root, hub, plc_port)
            edge = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "edgefabric.cli",
                "edge",
                "--config",
                str(config),
                stdout=asyncio.subprocess.PIPE,
                env=os.environ.copy(),
            )
            assert edge.stdout is not None
            async with asyncio.timeout(60):
                line = await edge.stdout.readline()
            started = time.monotonic()
            await asyncio.sleep(seconds)
            tree = process_tree(edge.pid)
            sizes = {pid: rss_kib(pid) for pid in tree}
            edge.terminate()
            await edge.wait()
    print(f"edge: {line.decode().strip()}  (idle {time.monotonic() - started:.0f} s)")
    for pid, name in tree.items():
        print(f"  {name:<16} pid {pid:<7} RSS {sizes[pid] / 1024:7.1f} MiB")
    print(f"  {'total':<16} {'':11} RSS {sum(sizes.values()) / 1024:7.1f} MiB   (target 150 MiB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(main(parser.parse_args().seconds))
