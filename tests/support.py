"""Helpers for tests: waiting on conditions (never blind sleeps) and collecting messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest


async def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> None:
    """Wait until `predicate()` is truthy; fail the test with a clear message on timeout."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(interval)
    except TimeoutError:
        pytest.fail(f"condition not met within {timeout} s: {what or predicate}")
