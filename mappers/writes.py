"""The write path: `DeviceWrite` in, device writes with read-back, `DeviceWriteResult` out.

Contract (used by the twin):
- requests arrive on `topics.device_write(device)`;
- each property is checked (known, ReadWrite, convertible, within min/max and the data type),
  written, then all written properties are read back in one batch;
- a fresh `Reading` is published for every read-back property *before* the result, so a twin
  that receives the result already holds the reported value;
- the result goes to `reply_to`, else the MQTT v5 response topic, else
  `topics.device_write_result(device)`, with the request's correlation id in the body and,
  when the request carried v5 correlation data, as correlation data too;
- `errors[prop]` is ``"<WriteErrorCode>: <detail>"``;
- a payload that is not a valid `DeviceWrite` for this device goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bus.errors import NotConnected
from bus.subscription import InboundMessage, Overflow
from mappers.device import PropertySpec
from mappers.errors import DeviceUnavailable, MapperError, PropertyReadOnly
from mappers.values import to_reported, to_writable
from schemas import topics
from schemas.base import JsonValue
from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.readings import DeviceWrite, DeviceWriteResult

if TYPE_CHECKING:
    from mappers.runner import DeviceMapper

log = logging.getLogger(__name__)

WRITE_INBOX = 100
"""Pending write requests per device; the broker holds more (QoS 1 back-pressure)."""


def _reason(exc: MapperError) -> str:
    return f"{exc.code.value}: {exc}"


class WriteHandler:
    """Serves one device's write topic for its `DeviceMapper`."""

    def __init__(self, mapper: DeviceMapper) -> None:
        self._mapper = mapper
        self.writes = 0

    async def serve(self, ready: asyncio.Event) -> None:
        """Subscribe, signal `ready`, then handle requests one at a time, in order."""
        device = self._mapper.device.name
        async with self._mapper.bus.subscribe(
            topics.device_write(device), maxsize=WRITE_INBOX, overflow=Overflow.BLOCK
        ) as inbox:
            ready.set()
            async for message in inbox:
                await self.handle(message)

    async def handle(self, message: InboundMessage) -> None:
        """Decode, write, read back, publish readings and the result."""
        mapper = self._mapper
        try:
            request = decode(DeviceWrite, message.payload)
        except SchemaError as exc:
            await mapper.dead_letter(message, exc.reason)
            return
        if request.device != mapper.device.name:
            await mapper.dead_letter(
                message, f"write for device {request.device!r} on {mapper.device.name!r}'s topic"
            )
            return
        reply_to = (
            request.reply_to
            or message.response_topic
            or topics.device_write_result(mapper.device.name)
        )
        if (refusal := topics.reply_topic_refusal(reply_to)) is not None:
            await mapper.dead_letter(message, refusal)
            return
        written, errors = await self.apply(request.values)
        correlation_id = request.correlation_id
        if correlation_id is None and message.correlation_data is not None:
            correlation_id = message.correlation_data.decode("utf-8", errors="replace")[:64]
        result = DeviceWriteResult(
            device=mapper.device.name,
            correlation_id=correlation_id,
            written=written,
            errors=errors,
        )
        try:
            await mapper.bus.publish(
                reply_to, encode(result), correlation_data=message.correlation_data
            )
        except NotConnected as exc:
            log.warning("%s: write result not published: %s", mapper.device.name, exc)

    async def apply(
        self, values: dict[str, JsonValue]
    ) -> tuple[dict[str, JsonValue], dict[str, str]]:
        """Write `values` and read them back.

        Returns:
            (read-back values by property, error reason by property).

        """
        mapper = self._mapper
        errors: dict[str, str] = {}
        done: list[PropertySpec] = []
        for name, value in values.items():
            try:
                prop = mapper.check_property(name)
                if not prop.writable:
                    raise PropertyReadOnly(f"{name} is {prop.access_mode.value}")
                coerced = to_writable(prop, value)
                await self._write_one(prop, coerced)
            except MapperError as exc:
                errors[name] = _reason(exc)
                continue
            done.append(prop)
        self.writes += len(done)
        written = await self._read_back(done, errors)
        return written, errors

    async def _write_one(self, prop: PropertySpec, value: JsonValue) -> None:
        mapper = self._mapper
        async with mapper.lock:
            await mapper.ensure_connected(force=True)
            try:
                await mapper.driver.write(prop, value)
            except DeviceUnavailable as exc:
                await mapper.link_failed(exc)
                raise

    async def _read_back(
        self, props: list[PropertySpec], errors: dict[str, str]
    ) -> dict[str, JsonValue]:
        if not props:
            return {}
        mapper = self._mapper
        try:
            values = await mapper.read(props)
        except DeviceUnavailable as exc:
            for prop in props:
                errors[prop.name] = f"{exc.code.value}: written, but read-back failed: {exc}"
            return {}
        written: dict[str, JsonValue] = {}
        for prop in props:
            value = values.get(prop.name)
            if isinstance(value, MapperError):
                errors[prop.name] = f"{value.code.value}: written, but read-back failed: {value}"
                continue
            written[prop.name] = to_reported(prop, value)
        await mapper.accept({name: values[name] for name in written}, publish=True)
        return written
