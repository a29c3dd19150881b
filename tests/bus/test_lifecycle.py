"""Service lifetimes: leaving a service always stops its tasks, even stubborn ones."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bus.lifecycle import ServiceState, ServiceTasks, raise_if_cancelled
from tests.support import wait_for


async def test_leaving_stops_a_task_that_swallows_one_cancellation():
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # a lost cancel, as a TimeoutError race can cause on 3.11
        await asyncio.Event().wait()

    tasks = ServiceTasks("svc")
    async with asyncio.timeout(5):
        async with tasks:
            tasks.spawn(stubborn(), "stubborn")
            await asyncio.sleep(0)  # let it start (a yield, not a wait)
    assert swallowed.is_set()
    assert tasks.state is ServiceState.STOPPED


async def test_a_loop_that_checks_ends_after_a_library_dropped_its_cancellation():
    """One cancel() only, as a plain task's owner sends it: the check must end the loop."""
    turns = 0

    async def library_call() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # as 3.11's wait_for may, in a race
            await asyncio.sleep(0.01)

    async def loop() -> None:
        nonlocal turns
        while True:
            raise_if_cancelled()
            turns += 1
            await library_call()

    task = asyncio.create_task(loop())
    await wait_for(lambda: turns >= 3, what="the loop turning")
    task.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert turns > 0


async def test_tasks_are_named_after_the_service():
    async with ServiceTasks("twin") as tasks:
        task = tasks.spawn(asyncio.sleep(10), "readings")
        assert task.get_name() == "twin.readings"


async def test_an_error_in_a_task_surfaces_when_the_service_stops():
    async def broken() -> None:
        raise ValueError("boom")

    with pytest.raises(ExceptionGroup) as caught:
        async with ServiceTasks("svc") as tasks:
            tasks.spawn(broken(), "broken")
            async with asyncio.timeout(5):
                await asyncio.Event().wait()  # the failing task cancels this wait
    assert caught.group_contains(ValueError)


async def test_spawning_outside_the_lifetime_is_refused():
    tasks = ServiceTasks("svc")
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="outside"):
        tasks.spawn(coro, "late")
