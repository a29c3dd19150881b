"""The boundary between the shared mapper runtime and one protocol.

A driver knows its protocol and nothing about the bus: it connects, reads a batch of
properties, writes one property, and raises `mappers.errors` types. `mappers.runner` owns
cycles, status, the write path and publishing, identically for every protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mappers.device import PropertySpec
from mappers.errors import MapperError

ReadResult = dict[str, object | MapperError]
"""Per property name: the decoded value, or the error that property alone hit."""


class Driver(Protocol):
    """What a protocol must provide to be run by `mappers.runner.DeviceMapper`.

    `read` raises `DeviceUnavailable` (or `DeviceTimeout`) when the link itself failed, and
    returns per-property errors for anything that concerns one property only, so one bad
    register degrades that property, not the device.
    """

    requests: int
    """Protocol requests sent so far (the bench compares merging on and off with it)."""

    @property
    def connected(self) -> bool:
        """True while the link is believed up."""
        ...

    async def connect(self) -> None:
        """Open the link. Raises `DeviceUnavailable` when the device cannot be reached."""
        ...

    async def close(self) -> None:
        """Close the link; safe when already closed."""
        ...

    async def read(self, props: Sequence[PropertySpec]) -> ReadResult:
        """Read `props` in as few requests as the protocol allows."""
        ...

    async def write(self, prop: PropertySpec, value: object) -> None:
        """Write one already-validated property value."""
        ...

    async def watch(self, props: Sequence[PropertySpec]) -> bool:
        """Start pushing value changes of `props`; False if the protocol cannot push.

        Called after every (re)connect, so subscriptions are renewed after a server restart.
        A driver without push support returns False and the runner polls at the collect
        cycle.
        """
        ...

    async def next_change(self, timeout: float) -> tuple[PropertySpec, object] | None:
        """The next pushed value, or None when nothing changed within `timeout` seconds.

        Raises `DeviceUnavailable` when the link was lost (checked at least every `timeout`).
        """
        ...
