"""Run one edge's bridge on its own: ``python -m cloud_bridge --edge-id E --broker URL --leaf URL``.

Used by `edgefabric bridge run` and by the chaos tests that kill -9 the bridge process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from bus.mqtt import MqttClient
from cloud_bridge.bridge import CloudBridge
from cloud_bridge.settings import BridgeSettings


def parser() -> argparse.ArgumentParser:
    """The command line of a stand-alone bridge."""
    p = argparse.ArgumentParser(prog="python -m cloud_bridge", description=__doc__)
    p.add_argument("--edge-id", required=True)
    p.add_argument("--broker", required=True, help="local MQTT broker, mqtt://host:port")
    p.add_argument("--leaf", required=True, help="the edge leaf nats-server, nats://host:port")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--protocol", choices=["auto", "3.1.1", "5"], default="auto")
    return p


async def run(args: argparse.Namespace) -> None:
    """Run until SIGTERM or SIGINT."""
    settings = BridgeSettings(edge_id=args.edge_id, leaf_url=args.leaf, batch=args.batch)
    bus = MqttClient(
        args.broker,
        client_id=f"{args.edge_id}-bridge",
        clean_session=False,
        manual_ack=True,
        protocol=args.protocol,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with CloudBridge(settings, bus=bus):
        print("bridge ready", flush=True)
        await stop.wait()


def main() -> None:
    """Entry point."""
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(parser().parse_args()))


if __name__ == "__main__":
    main()
