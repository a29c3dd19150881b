"""A TCP proxy for chaos tests: forwards, or black-holes (no RST, bytes silently vanish)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self


class BlackHoleProxy:
    """Listens on `port` and forwards to `target`; `blackhole()` makes the network go silent.

    While black-holed, open connections stay open but nothing crosses them, and new connections
    are accepted and then ignored, as behind a dead router. `restore()` aborts the silent
    connections (their peers gave up on them long ago) and forwards new ones again.
    """

    def __init__(self, *, port: int, target_host: str, target_port: int) -> None:
        self.port = port
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._open = asyncio.Event()
        self._open.set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        self._abort_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def blackhole(self) -> None:
        """Stop moving bytes, without closing anything."""
        self._open.clear()

    def restore(self) -> None:
        """Drop the silent connections and forward again."""
        self._abort_all()
        self._open.set()

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if not self._open.is_set():
            return  # accepted, then ignored: a black hole
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await src.read(65536):
                await self._open.wait()  # black-holed: hold (and later drop) the bytes
                dst.write(data)
                await dst.drain()
        dst.transport.abort() if not self._open.is_set() else dst.close()
