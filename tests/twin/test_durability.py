"""An acknowledged desired update survives kill -9 of the twin process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from bus.mqtt import MqttClient
from twin.client import TwinClient


async def _start_twin(url: str, db: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "twin", "--broker", url, "--db", str(db), "--protocol", "3.1.1"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout=30)
    assert line.strip() == b"ready", line
    return process


async def test_acknowledged_update_survives_kill_9(amqtt_url: str, tmp_path: Path) -> None:
    db = tmp_path / "twin.db"
    twin = await _start_twin(amqtt_url, db)
    try:
        async with (
            MqttClient(amqtt_url, client_id="app", protocol="3.1.1") as bus,
            TwinClient(bus, name="app") as client,
        ):
            acked = await client.set("valve", {"open": {"percent": 40, "note": 'a "b"'}})
            assert acked.ok
            twin.send_signal(signal.SIGKILL)
            await asyncio.to_thread(twin.wait, 10)
            assert twin.returncode == -signal.SIGKILL
            _close(twin)
            twin = await _start_twin(amqtt_url, db)
            document = await client.get("valve", timeout=10)
        desired = document.properties["open"].desired
        assert desired is not None
        assert desired.value == {"percent": 40, "note": 'a "b"'}
        assert document.desired_version == acked.desired_version
    finally:
        twin.kill()
        twin.wait(timeout=10)
        _close(twin)


def _close(process: subprocess.Popen[bytes]) -> None:
    if process.stdout is not None:
        process.stdout.close()
