"""The lifetime every long-lived service shares: one TaskGroup, named tasks, clean exit.

A service enters `ServiceTasks` when it starts, spawns its loops with `spawn`, and leaves it
when it stops: every task is cancelled and awaited, and an error in one task surfaces instead
of vanishing (no fire-and-forget). Leaving twice is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from enum import StrEnum
from types import TracebackType
from typing import Any, Self


class ServiceState(StrEnum):
    """Where a service is in its life."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ServiceTasks:
    """A TaskGroup whose tasks are all cancelled when the service stops."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = ServiceState.NEW
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], task: str) -> asyncio.Task[Any]:
        """Run `coro` as the task ``{service}.{task}`` for the life of the service."""
        if self._group is None:
            coro.close()
            raise RuntimeError(f"{self.name}: spawn({task!r}) outside the service's lifetime")
        created = self._group.create_task(coro, name=f"{self.name}.{task}")
        self._tasks.add(created)
        created.add_done_callback(self._tasks.discard)
        return created

    async def spawn_ready(
        self,
        serve: Callable[[asyncio.Event], Coroutine[Any, Any, Any]],
        task: str,
        *,
        timeout: float = 10.0,
    ) -> asyncio.Task[Any]:
        """Run `serve(ready)` as a task and return once it has set `ready`.

        A consumer sets `ready` when its subscription is active, so a service that returns
        from ``__aenter__`` misses nothing published after that.

        Raises:
            TimeoutError: `ready` was not set within `timeout` seconds.
        """
        ready = asyncio.Event()
        created = self.spawn(serve(ready), task)
        async with asyncio.timeout(timeout):
            await ready.wait()
        return created

    async def __aenter__(self) -> Self:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self.state = ServiceState.RUNNING
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        self.state = ServiceState.STOPPING
        try:
            await self._cancel_all()
            await group.__aexit__(None, None, None)
        finally:
            self.state = ServiceState.STOPPED

    async def _cancel_all(self) -> None:
        """Cancel every task until it has ended.

        A cancellation can be lost: on Python 3.11 a cancel that lands as an
        `asyncio.timeout` expires may surface as TimeoutError, which the task then handles as
        an ordinary timeout and carries on. Cancelling again until the task is done makes
        shutdown certain instead of hanging on such a task.
        """
        pending = {task for task in self._tasks if not task.done()}
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop but is still running.

    On Python 3.11 `asyncio.wait_for` (inside nats.py's requests and fetches) returns a result
    that arrives just as the task is cancelled and drops the cancellation; a loop around such
    calls then runs forever and whoever awaits the task hangs. The task's `cancelling()` count
    still records the request, so loops that call such libraries check it each turn.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class ContextGroup:
    """Several async context managers entered in order and left in reverse, as one.

    If entering one fails, the ones already entered are left again before the error surfaces,
    so a service made of parts (every device's mapper, every pipeline) never half-starts.
    """

    def __init__(self, members: Sequence[AbstractAsyncContextManager[Any]]) -> None:
        self.members = list(members)
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            for member in self.members:
                await stack.enter_async_context(member)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
