"""Real servers on free loopback ports, one set per test, always torn down.

Fixtures:
    amqtt_url      embedded amqtt broker (MQTT 3.1.1)
    mosquitto_url  a Mosquitto process (MQTT 5); missing mosquitto skips locally, fails in CI
    broker_url     parametrised over both brokers (use for contract tests)
    nats_link      a hub and an edge leaf nats-server connected by a leaf link
    modbus_plc     a pymodbus simulated PLC
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus.broker import EmbeddedBroker
from bus.nats_server import HubSpec, LeafSpec, NatsServer
from bus.ports import free_port
from mappers.simulators.modbus_plc import ModbusPlcSimulator

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
async def amqtt_url() -> AsyncIterator[str]:
    async with EmbeddedBroker(port=free_port()) as broker:
        yield broker.url


def require_mosquitto_tool(name: str = "mosquitto") -> str:
    """Path of a Mosquitto program: skipped locally when missing, a failure in CI."""
    found = (
        shutil.which(name)
        or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
        or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    )
    if found is None:
        if IN_CI:
            pytest.fail(f"{name} is required in CI (apt-get install -y mosquitto)")
        pytest.skip(f"{name} not installed (apt-get install -y mosquitto)")
    return found


def _mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


@pytest.fixture
def mosquitto_url(tmp_path: Path) -> Iterator[str]:
    binary = require_mosquitto_tool()
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\n"
        "max_inflight_messages 1000\nmax_queued_messages 100000\n"
    )
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_port(port)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(timeout=10)


def _wait_port(port: int, timeout: float = 10.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


@pytest.fixture(params=["amqtt", "mosquitto"])
async def broker_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "amqtt":
        async with EmbeddedBroker(port=free_port()) as broker:
            yield broker.url
    else:
        yield request.getfixturevalue("mosquitto_url")


@dataclass
class NatsLink:
    """A cloud hub and one edge leaf, connected."""

    hub: NatsServer
    leaf: NatsServer
    edge_id: str

    @property
    def hub_leaf_url(self) -> str:
        spec = self.hub.spec
        assert isinstance(spec, HubSpec)
        return f"nats-leaf://127.0.0.1:{spec.leafnode_port}"


def make_nats_link(tmp_path: Path, edge_id: str = "edge-1") -> NatsLink:
    hub_spec = HubSpec(
        name="hub",
        port=free_port(),
        leafnode_port=free_port(),
        monitor_port=free_port(),
        store_dir=tmp_path / "hub" / "js",
    )
    leaf_spec = LeafSpec(
        edge_id=edge_id,
        port=free_port(),
        monitor_port=free_port(),
        store_dir=tmp_path / edge_id / "js",
        hub_leaf_urls=(f"nats-leaf://127.0.0.1:{hub_spec.leafnode_port}",),
    )
    return NatsLink(hub=NatsServer(hub_spec), leaf=NatsServer(leaf_spec), edge_id=edge_id)


@pytest.fixture
async def nats_link(tmp_path: Path) -> AsyncIterator[NatsLink]:
    link = make_nats_link(tmp_path)
    async with link.hub, link.leaf:
        await link.hub.wait_leaf_connected(timeout=15)
        yield link


@pytest.fixture
async def modbus_plc() -> AsyncIterator[ModbusPlcSimulator]:
    async with ModbusPlcSimulator(port=free_port()) as plc:
        yield plc
