"""`edgefabric bridge`: run one edge's bridge alone, or print its retained status."""

from __future__ import annotations

import argparse
import asyncio


def _status(args: argparse.Namespace) -> int:
    from bus.mqtt import MqttClient
    from schemas import topics
    from schemas.bridge import BridgeStatus
    from schemas.codec import decode

    async def read() -> BridgeStatus | None:
        async with (
            MqttClient(args.broker, client_id="edgefabric-bridge-status", protocol="3.1.1") as bus,
            bus.subscribe(topics.bridge_status()) as sub,
        ):
            try:
                async with asyncio.timeout(args.timeout):
                    message = await anext(sub)
            except TimeoutError:
                return None
            return decode(BridgeStatus, message.payload)

    status = asyncio.run(read())
    if status is None:
        print(f"no bridge status on {args.broker} within {args.timeout} s")
        return 1
    print(
        f"edge {status.edge}: link {status.link.value}, queued {status.queued},"
        f" forwarded {status.forwarded}, ingested {status.ingested}"
    )
    print(f"{'class':<14}{'queued':>9}{'bytes':>12}{'forwarded':>11}{'dropped':>9}{'lag s':>8}")
    for name, c in status.classes.items():
        print(
            f"{name:<14}{c.queued:>9}{c.queued_bytes:>12}{c.forwarded:>11}{c.dropped:>9}"
            f"{c.lag_s:>8.1f}"
        )
    return 0


def _run(args: argparse.Namespace) -> int:
    from cloud_bridge.__main__ import run

    asyncio.run(run(args))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `bridge` subcommand (status, run)."""
    bridge = sub.add_parser("bridge", help="the cloud bridge: status, or run it alone")
    verbs = bridge.add_subparsers(dest="verb", required=True)
    status = verbs.add_parser("status", help="print link state, queue depth per class, lag")
    status.add_argument("--broker", required=True, help="the edge's MQTT broker, mqtt://HOST:PORT")
    status.add_argument("--timeout", type=float, default=5.0)
    status.set_defaults(handler=_status)
    run = verbs.add_parser("run", help="run one edge's bridge (as python -m cloud_bridge)")
    run.add_argument("--edge-id", required=True)
    run.add_argument("--broker", required=True)
    run.add_argument("--leaf", required=True)
    run.add_argument("--batch", type=int, default=512)
    run.add_argument("--protocol", choices=["auto", "3.1.1", "5"], default="auto")
    run.set_defaults(handler=_run)
