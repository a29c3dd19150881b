"""Child processes a chaos test can SIGKILL and start again: Mosquitto and any edge service."""

from __future__ import annotations

import asyncio
import getpass
import sys
from pathlib import Path
from typing import Self

from tests.conftest import _mosquitto_binary, _wait_port

AUTOSAVE_S = 1
"""Mosquitto writes its persistence file every AUTOSAVE_S seconds (and on clean shutdown only).

So after a SIGKILL of the broker, what it PUBACKed in the last AUTOSAVE_S seconds but had not
yet passed on may be gone: that is Mosquitto's durability contract, not edgefabric's. The chaos
test therefore treats a message as *acknowledged across a broker kill* only if its PUBACK came
more than `AT_RISK_S` before the kill (see test_chaos.py)."""


class Child:
    """One child process (argv), ready once its stdout prints a line containing `ready`."""

    def __init__(
        self, name: str, argv: list[str], *, ready: bytes, cwd: Path | None = None
    ) -> None:
        self.name = name
        self._argv = argv
        self._ready = ready
        self._cwd = cwd
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 20.0) -> None:
        """Start and wait for the ready line."""
        self._process = process = await asyncio.create_subprocess_exec(
            *self._argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=self._cwd,
        )
        assert process.stdout is not None
        async with asyncio.timeout(timeout):
            while self._ready not in (line := await process.stdout.readline()):
                assert line, f"{self.name} exited before it was ready"
        self._drain = asyncio.create_task(self._discard(process.stdout))

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    async def kill9(self) -> None:
        """SIGKILL: no flush, no goodbye."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        if self._drain is not None:
            await self._drain

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._drain is not None:
            await self._drain

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def python(*args: str) -> list[str]:
    """argv running the venv's python."""
    return [sys.executable, *args]


class Mosquitto:
    """A persistent Mosquitto on a fixed port, so a restarted broker keeps QoS 1 sessions."""

    def __init__(self, directory: Path, port: int) -> None:
        binary = _mosquitto_binary()
        assert binary is not None, "mosquitto is required (apt-get install -y mosquitto)"
        self.port = port
        self.url = f"mqtt://127.0.0.1:{port}"
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {directory}/\n"
            f"autosave_interval {AUTOSAVE_S}\nset_tcp_nodelay true\n"
            # Started as root, Mosquitto drops to the `mosquitto` user, which cannot write a
            # persistence file into this test's directory: every session would be lost on a
            # restart. Run as whoever runs the test instead.
            f"user {getpass.getuser()}\n"
            "max_inflight_messages 1000\nmax_queued_messages 100000\n"
        )
        self._argv = [binary, "-c", str(conf)]
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start and wait until it listens."""
        self._process = await asyncio.create_subprocess_exec(
            *self._argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await asyncio.to_thread(_wait_port, self.port)

    async def kill9(self) -> None:
        """SIGKILL the broker."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.kill9()
