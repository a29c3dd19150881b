"""`edgefabric mapper`: run device mappers alone against any broker (as KubeEdge runs them)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from bus.mqtt import MqttClient
    from mappers.device import load_devices
    from mappers.service import MapperService

    devices = [d for path in args.devices for d in load_devices(Path(path))]

    async def run() -> None:
        async with (
            MqttClient(args.broker, client_id=args.client_id) as bus,
            MapperService(devices, bus=bus),
        ):
            print(f"mapping {len(devices)} device(s) onto {bus.url}", flush=True)
            await asyncio.Event().wait()

    asyncio.run(run())
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `mapper` subcommand."""
    mapper = sub.add_parser("mapper", help="run device mappers alone against any broker")
    mapper.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
    mapper.add_argument(
        "--devices", nargs="+", required=True, help="device files (native or KubeEdge YAML)"
    )
    mapper.add_argument("--client-id", default="edgefabric-mapper")
    mapper.set_defaults(handler=_run)
