"""Shared helpers of the twin tests: a running twin with a client, and a collector."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bus.mqtt import MqttClient
from mappers.device import DeviceInstance
from twin.client import TwinClient
from twin.service import TwinService


@dataclass
class Running:
    twin: TwinService
    client: TwinClient
    app_bus: MqttClient


@contextlib.asynccontextmanager
async def running_twin(
    url: str,
    db: Path,
    devices: Sequence[DeviceInstance] = (),
    *,
    write_timeout: float = 5.0,
    kubeedge: bool = False,
) -> AsyncIterator[Running]:
    async with (
        MqttClient(url, client_id="twin-svc") as twin_bus,
        MqttClient(url, client_id="twin-app") as app_bus,
        TwinService(
            bus=twin_bus,
            db_path=db,
            devices=devices,
            write_timeout=write_timeout,
            kubeedge=kubeedge,
        ) as twin,
        TwinClient(app_bus, name="app") as client,
    ):
        yield Running(twin, client, app_bus)
