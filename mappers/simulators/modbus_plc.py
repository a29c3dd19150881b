"""A simulated Modbus TCP PLC (pymodbus server) for the demo, the tests and `edgefabric simulate`.

Register map (holding registers, unit 1) when `live=True`:

    0   temperature  int16, 0.1 degC per count (scale 0.1), a slow sine with noise
    1   pressure     uint16, 0.01 bar per count
    2   vibration    int16, 0.001 g per count, occasional bursts (anomalies)
    10  setpoint     int16, ReadWrite, 0.1 degC per count
"""

from __future__ import annotations

import asyncio
import math
import random
from enum import IntEnum
from types import TracebackType
from typing import Self

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

BLOCK_SIZE = 1024


class RegisterKind(IntEnum):
    """The four Modbus tables, valued by the function code that reads each."""

    COIL = 1
    DISCRETE_INPUT = 2
    HOLDING = 3
    INPUT = 4


class ModbusPlcSimulator:
    """A pymodbus TCP server with 1024 entries in each table, as an async context manager.

    Args:
        host: bind address.
        port: TCP port.
        unit_id: the Modbus device (slave) id it answers to.
        live: run a task that moves the demo registers like a real machine.
        period: seconds between live updates.

    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 5020,
        unit_id: int = 1,
        live: bool = False,
        period: float = 0.05,
        seed: int = 7,
    ) -> None:
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self._live = live
        self._period = period
        self._rng = random.Random(seed)
        self._server: ModbusTcpServer | None = None
        self._live_task: asyncio.Task[None] | None = None
        self.anomaly = False

    @property
    def url(self) -> str:
        """Where the simulator listens, as ``tcp://host:port``."""
        return f"tcp://{self.host}:{self.port}"

    def _device(self) -> SimDevice:
        bits = [SimData(0, count=BLOCK_SIZE, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=BLOCK_SIZE, values=0, datatype=DataType.REGISTERS)]
        return SimDevice(
            self.unit_id,
            simdata=(
                list(bits),
                [SimData(0, count=BLOCK_SIZE, values=False, datatype=DataType.BITS)],
                list(regs),
                [SimData(0, count=BLOCK_SIZE, values=0, datatype=DataType.REGISTERS)],
            ),
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (again, after `stop`), keeping the register values of a previous run."""
        saved = await self._snapshot() if self._server is not None else None
        self._server = ModbusTcpServer(self._device(), address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        if saved is not None:
            for kind, values in saved.items():
                await self.set(kind, 0, values)
        if self._live and self._live_task is None:
            self._live_task = asyncio.create_task(self._run_live(), name="simulator.modbus.live")

    async def stop(self) -> None:
        """Stop listening (connected clients see the connection drop)."""
        if self._live_task is not None:
            self._live_task.cancel()
            await asyncio.gather(self._live_task, return_exceptions=True)
            self._live_task = None
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]

    async def _snapshot(self) -> dict[RegisterKind, list[int] | list[bool]]:
        return {kind: await self.get(kind, 0, BLOCK_SIZE) for kind in RegisterKind}

    async def set(self, kind: RegisterKind, address: int, values: list[int] | list[bool]) -> None:
        """Write raw 16-bit registers or bits into the simulated device."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        await self._server.context.async_setValues(self.unit_id, int(kind), address, values)

    async def get(self, kind: RegisterKind, address: int, count: int) -> list[int] | list[bool]:
        """Read raw registers or bits from the simulated device."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        values = await self._server.context.async_getValues(self.unit_id, int(kind), address, count)
        if not isinstance(values, list):
            raise TypeError(f"simulator read failed: {values!r}")
        return values

    async def _run_live(self) -> None:
        t = 0.0
        while True:
            temperature = 215 + 30 * math.sin(t / 20) + self._rng.gauss(0, 2)
            pressure = 150 + 10 * math.sin(t / 7) + self._rng.gauss(0, 1)
            burst = self.anomaly or self._rng.random() < 0.01
            vibration = self._rng.gauss(0, 400 if burst else 40)
            await self.set(
                RegisterKind.HOLDING,
                0,
                [int(temperature) & 0xFFFF, int(pressure) & 0xFFFF, int(vibration) & 0xFFFF],
            )
            t += 1
            await asyncio.sleep(self._period)
