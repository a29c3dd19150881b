"""`edgefabric simulate modbus|opcua`: run one simulated device alone."""

from __future__ import annotations

import argparse
import asyncio


async def _modbus(host: str, port: int) -> None:
    from mappers.simulators.modbus_plc import ModbusPlcSimulator

    async with ModbusPlcSimulator(host=host, port=port, live=True) as sim:
        print(f"Modbus PLC simulator on {sim.url}", flush=True)
        await asyncio.Event().wait()


async def _opcua(host: str, port: int) -> None:
    from mappers.simulators.opcua_machine import OpcUaMachineSimulator

    async with OpcUaMachineSimulator(host=host, port=port, live=True) as sim:
        print(f"OPC UA machine simulator on {sim.url}", flush=True)
        await asyncio.Event().wait()


def _run(args: argparse.Namespace) -> int:
    port = args.port or (5020 if args.kind == "modbus" else 4840)
    runner = _modbus if args.kind == "modbus" else _opcua
    asyncio.run(runner(args.host, port))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `simulate` subcommand."""
    simulate = sub.add_parser("simulate", help="run a simulated device")
    simulate.add_argument("kind", choices=["modbus", "opcua"])
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument(
        "--port", type=int, default=None, help="default 5020 (modbus), 4840 (opcua)"
    )
    simulate.set_defaults(handler=_run)
