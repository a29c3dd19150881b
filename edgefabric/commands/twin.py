"""`edgefabric twin get|set|watch DEVICE`: read and steer device twins on a running edge."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from typing import Any

from schemas.base import JsonValue


def parse_assignments(pairs: Sequence[str]) -> dict[str, JsonValue]:
    """Read ``PROP=VALUE`` pairs into desired values.

    VALUE is JSON when it parses (``42``, ``true``, ``{"a": 1}``), else the text as a string
    (``mode=eco night`` needs no quoting beyond the shell's).

    Raises:
        ValueError: a pair has no ``=`` or an empty property name.

    """
    values: dict[str, JsonValue] = {}
    for pair in pairs:
        prop, sep, raw = pair.partition("=")
        if not sep or not prop:
            raise ValueError(f"expected PROP=VALUE, got {pair!r}")
        try:
            values[prop] = json.loads(raw)
        except ValueError:
            values[prop] = raw
    return values


def _client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"client_id": args.client_id, "protocol": args.protocol}


async def _get(args: argparse.Namespace) -> int:
    from bus.mqtt import MqttClient
    from twin.client import TwinClient

    async with (
        MqttClient(args.broker, **_client_kwargs(args)) as bus,
        TwinClient(bus, name=args.client_id) as client,
    ):
        document = await client.get(args.device, timeout=args.timeout)
    print(document.model_dump_json(indent=2))
    return 0


async def _set(args: argparse.Namespace) -> int:
    from bus.mqtt import MqttClient
    from schemas.twin import TwinSource
    from twin.client import TwinClient

    values = parse_assignments(args.assignments)
    async with (
        MqttClient(args.broker, **_client_kwargs(args)) as bus,
        TwinClient(bus, name=args.client_id, source=TwinSource.EDGE) as client,
    ):
        result = await client.set(
            args.device, values, expected_version=args.expected_version, timeout=args.timeout
        )
    print(result.model_dump_json(indent=2, exclude_none=True))
    return 0 if result.ok else 1


async def _watch(args: argparse.Namespace) -> int:
    from bus.mqtt import MqttClient
    from twin.client import watch

    seen = 0
    async with (
        MqttClient(args.broker, **_client_kwargs(args)) as bus,
        watch(bus, args.device) as messages,
    ):
        print(f"watching {args.device} on {bus.url}", flush=True)
        async for message in messages:
            print(f"{message.topic} {message.payload.decode('utf-8', 'replace')}", flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    return 0


_COMMANDS = {"get": _get, "set": _set, "watch": _watch}


def _run(args: argparse.Namespace) -> int:
    if args.action == "set":
        try:
            parse_assignments(args.assignments)
        except ValueError as exc:
            print(f"edgefabric twin set: {exc}")
            return 2
    return asyncio.run(_COMMANDS[args.action](args))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `twin` subcommand (get, set, watch)."""
    twin = sub.add_parser("twin", help="read and steer device twins on a running edge")
    actions = twin.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("get", "print a device's twin document"),
        ("set", "set desired values: PROP=VALUE [...] (VALUE is JSON, else a string)"),
        ("watch", "print every document, delta and error of a device as they happen"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("device")
        if name == "set":
            action.add_argument("assignments", nargs="+", metavar="PROP=VALUE")
            action.add_argument("--expected-version", type=int, default=None)
        if name == "watch":
            action.add_argument("--count", type=int, default=None, help="stop after N messages")
        action.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://HOST:PORT")
        action.add_argument("--protocol", choices=["auto", "3.1.1", "5"], default="auto")
        action.add_argument("--timeout", type=float, default=5.0, help="seconds to wait")
        action.add_argument("--client-id", default="edgefabric-twin-cli")
        action.set_defaults(handler=_run)
