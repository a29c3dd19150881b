"""The `edgefabric` command: the demo, each side as deployed, and each service alone."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edgefabric.errors import ConfigError
from schemas.errors import EdgefabricError

Handler = Callable[[argparse.Namespace], int]


def _demo(args: argparse.Namespace) -> int:
    from edgefabric.demo import run_demo

    counts = asyncio.run(run_demo(duration=args.duration))
    summary = counts.summary()
    print("summary:", json.dumps(summary))
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


async def _forever() -> None:
    await asyncio.Event().wait()


def _edge(args: argparse.Namespace) -> int:
    from edgefabric.config import EdgeConfig, load_config
    from edgefabric.edge import Edge

    config = load_config(EdgeConfig, Path(args.config))

    async def run() -> None:
        async with Edge(config):
            print(f"edge {config.edge_id} running; Ctrl-C to stop", flush=True)
            await _forever()

    asyncio.run(run())
    return 0


def _cloud(args: argparse.Namespace) -> int:
    from edgefabric.cloud import Cloud, ResultsSink
    from edgefabric.config import CloudConfig, load_config

    config = load_config(CloudConfig, Path(args.config))

    async def run() -> None:
        async with Cloud(config) as cloud, cloud.consumer("cloud-results") as consumer:
            print(f"cloud hub on {config.hub.url}; Ctrl-C to stop", flush=True)
            sink = ResultsSink()
            async for message in consumer.messages():
                result = sink.handle(message)
                if result is not None:
                    print(
                        f"{message.edge}/{result.device}: {result.label} {result.score:.3f}",
                        flush=True,
                    )

    asyncio.run(run())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by tests and docs)."""
    parser = argparse.ArgumentParser(prog="edgefabric", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole stack on embedded defaults")
    demo.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    demo.add_argument("--summary-json", help="write the final counts as JSON here")
    demo.set_defaults(handler=_demo)

    edge = sub.add_parser("edge", help="run an edge node from a YAML config")
    edge.add_argument("--config", required=True)
    edge.set_defaults(handler=_edge)

    cloud = sub.add_parser("cloud", help="run the cloud side from a YAML config")
    cloud.add_argument("--config", required=True)
    cloud.set_defaults(handler=_cloud)

    from edgefabric.commands import mapper as mapper_command
    from edgefabric.commands import simulate as simulate_command

    mapper_command.register(sub)
    simulate_command.register(sub)
    from edgefabric.commands import twin as twin_command

    twin_command.register(sub)
    from edgefabric.commands import bridge as bridge_command
    from edgefabric.commands import infer as infer_command

    infer_command.register(sub)

    bridge_command.register(sub)
    from edgefabric.commands import keys as keys_command

    keys_command.register(sub)
    from edgefabric.commands import label as label_command
    from edgefabric.commands import models as models_command

    label_command.register(sub)
    models_command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        print(f"edgefabric: {exc}", file=sys.stderr)
        return 2
    except EdgefabricError as exc:
        print(f"edgefabric: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
