"""Desired -> device: the twin asks the mapper to write and records what came of it.

A write is one `DeviceWrite` per accepted desired update, correlated by a fresh id. The mapper
publishes fresh readings for what it wrote (the reported side, which clears the delta) and then
a `DeviceWriteResult`. A property the device refused, or a write with no result within the
timeout, is recorded on the twin (`TwinProperty.write`) with the reason and published as a
`TwinError`, so an app sees *why* the delta stays open instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from bus.errors import NotConnected
from bus.mqtt import MqttClient
from bus.subscription import Overflow
from schemas import topics
from schemas.base import JsonValue, new_message_id, now
from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.readings import DeviceWrite, DeviceWriteResult, WriteErrorCode
from schemas.twin import TwinError, TwinErrorCode, WriteState, WriteStatus
from twin.store import TwinStore

log = logging.getLogger(__name__)

WRITE_REPLY_CLIENT = "twin-writes"
"""Reply topic of the twin's device writes: ``topics.twin_reply(WRITE_REPLY_CLIENT)``."""

Publisher = Callable[[str], Awaitable[None]]
ErrorSink = Callable[[TwinError], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    device: str
    properties: tuple[str, ...]
    deadline: float


def _twin_code(code: WriteErrorCode | None) -> TwinErrorCode:
    return TwinErrorCode.TIMEOUT if code is WriteErrorCode.TIMEOUT else TwinErrorCode.REFUSED


class DeviceWrites:
    """Sends device writes, matches their results and expires the ones never answered.

    Args:
        bus: the twin's bus connection.
        store: where write outcomes are recorded.
        timeout: seconds a mapper has to answer a write.
        on_change: publishes the device's document and delta after an outcome is recorded.
        on_error: publishes a `TwinError` for a refused or timed-out write.

    """

    def __init__(
        self,
        *,
        bus: MqttClient,
        store: TwinStore,
        timeout: float,
        on_change: Publisher,
        on_error: ErrorSink,
    ) -> None:
        self._bus = bus
        self._store = store
        self._timeout = timeout
        self._on_change = on_change
        self._on_error = on_error
        self._pending: dict[str, _Pending] = {}
        self.sent = 0
        self.failed = 0

    @property
    def timeout(self) -> float:
        """Seconds a mapper has to answer a write."""
        return self._timeout

    @property
    def reply_topic(self) -> str:
        """Where mappers answer the twin's writes."""
        return topics.twin_reply(WRITE_REPLY_CLIENT)

    def pending_for(self, device: str) -> set[str]:
        """Properties of `device` with a write in flight."""
        return {p for w in self._pending.values() if w.device == device for p in w.properties}

    async def request(self, device: str, values: Mapping[str, JsonValue]) -> None:
        """Ask the device's mapper to write `values`; the outcome arrives later."""
        if not values:
            return
        correlation_id = new_message_id()
        props = tuple(values)
        self._store.record_writes(
            device, {p: WriteStatus(state=WriteState.PENDING, timestamp=now()) for p in props}
        )
        self._pending[correlation_id] = _Pending(device, props, time.monotonic() + self._timeout)
        write = DeviceWrite(
            device=device,
            values=dict(values),
            reply_to=self.reply_topic,
            correlation_id=correlation_id,
        )
        try:
            await self._bus.publish(topics.device_write(device), encode(write))
        except NotConnected as exc:
            self._pending.pop(correlation_id, None)
            await self._fail(device, dict.fromkeys(props, f"timeout: {exc}"), None)
            return
        self.sent += 1

    async def serve(self, ready: asyncio.Event) -> None:
        """Consume write results until cancelled."""
        async with self._bus.subscribe(
            self.reply_topic, maxsize=1000, overflow=Overflow.BLOCK
        ) as inbox:
            ready.set()
            async for message in inbox:
                try:
                    result = decode(DeviceWriteResult, message.payload)
                except SchemaError as exc:
                    log.warning("twin: unreadable write result on %s: %s", message.topic, exc)
                    continue
                await self._settle(result)

    async def expire(self) -> None:
        """Fail writes whose mapper never answered (runs until cancelled)."""
        tick = min(0.5, max(0.02, self._timeout / 10))
        while True:
            await asyncio.sleep(tick)
            clock = time.monotonic()
            for cid, pending in list(self._pending.items()):
                if pending.deadline <= clock:
                    del self._pending[cid]
                    reason = f"timeout: no answer from the mapper within {self._timeout:g} s"
                    await self._fail(pending.device, dict.fromkeys(pending.properties, reason), cid)

    async def _settle(self, result: DeviceWriteResult) -> None:
        pending = self._pending.pop(result.correlation_id or "", None)
        if pending is None:
            return  # late answer to an expired write, or another twin's
        done = {
            p: WriteStatus(state=WriteState.DONE, timestamp=result.timestamp)
            for p in pending.properties
            if p not in result.errors
        }
        if done:
            self._store.record_writes(pending.device, done)
        if result.errors:
            await self._fail(pending.device, dict(result.errors), result.correlation_id, result)
        else:
            await self._on_change(pending.device)

    async def _fail(
        self,
        device: str,
        reasons: dict[str, str],
        correlation_id: str | None,
        result: DeviceWriteResult | None = None,
    ) -> None:
        self.failed += 1
        statuses: dict[str, WriteStatus] = {}
        codes: set[TwinErrorCode] = set()
        for prop, reason in reasons.items():
            code = (
                _twin_code(result.error_code(prop))
                if result is not None
                else _twin_code(WriteErrorCode.TIMEOUT)
            )
            codes.add(code)
            statuses[prop] = WriteStatus(
                state=WriteState.FAILED, code=code, reason=reason, timestamp=now()
            )
        self._store.record_writes(device, statuses)
        code = TwinErrorCode.REFUSED if TwinErrorCode.REFUSED in codes else TwinErrorCode.TIMEOUT
        summary = "; ".join(f"{p}: {r}" for p, r in sorted(reasons.items()))
        await self._on_error(
            TwinError(
                device=device,
                code=code,
                reason=f"device write failed: {summary}",
                properties=reasons,
                correlation_id=correlation_id,
            )
        )
        await self._on_change(device)
