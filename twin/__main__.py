"""Run the twin service alone: ``python -m twin --broker mqtt://127.0.0.1:1883 --db twin.db``.

Prints ``ready`` on stdout once every subscription is in place (the kill -9 durability test and
scripts wait for that line). Device models are not loaded here; the edge passes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from bus.mqtt import MqttClient
from twin.service import TwinService


async def _run(args: argparse.Namespace) -> None:
    async with (
        MqttClient(args.broker, client_id=args.client_id, protocol=args.protocol) as bus,
        TwinService(bus=bus, db_path=Path(args.db), kubeedge=args.kubeedge),
    ):
        print("ready", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    """Parse arguments and run until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m twin", description=__doc__)
    parser.add_argument("--broker", required=True, help="mqtt://host:port")
    parser.add_argument("--db", required=True, help="SQLite file of the twin")
    parser.add_argument("--client-id", default="twin")
    parser.add_argument("--protocol", choices=["auto", "3.1.1", "5"], default="auto")
    parser.add_argument("--kubeedge", action="store_true", help="serve $hw/events/device topics")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args))


if __name__ == "__main__":
    main()
