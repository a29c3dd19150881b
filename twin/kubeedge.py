"""Opt-in adapter: KubeEdge's twin topics and message shapes, on top of the twin service.

So that an app written for KubeEdge's edgecore works unchanged against edgefabric:

- ``$hw/events/device/{id}/twin/update``: ``expected`` values set desired (validated like any
  desired update; refusals go to ``ef/twin/{device}/errors``), ``actual`` values are reported;
  an accepted update is echoed on ``.../twin/update/result``;
- ``.../twin/update/delta``: published when expected differs from actual, as edgecore does;
- ``.../twin/get`` -> ``.../twin/get/result`` with the whole twin;
- ``.../state/update``: the device's state (echoed on ``.../state/update/result``).

``{id}`` may be ``name`` or (KubeEdge >= 1.16) ``namespace/name``; the twin is keyed by the
name, and answers on the id form the request used. Values: KubeEdge sends strings; they are
converted with the device model's type (``"42"`` -> 42 for an int), untyped strings that parse
as JSON become that JSON value, and a non-string JSON value is accepted as is (KubeEdge itself
refuses quotes, braces and spaces; we do not). Outgoing values are strings: a string as is,
anything else as compact JSON.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bus.mqtt import MqttClient
from bus.subscription import InboundMessage
from mappers.device import PropertyType
from schemas.base import JsonValue, check_name, new_message_id, now
from schemas.codec import MAX_JSON_PAYLOAD
from schemas.errors import InvalidName, SchemaError
from schemas.readings import DeviceState
from schemas.twin import (
    TwinDesiredSet,
    TwinDocument,
    TwinError,
    TwinProperty,
    TwinSource,
)
from twin import kubeedge_messages as ke
from twin import kubeedge_topics as ket
from twin.errors import DollarTopicsRefused, TwinUpdateRefused
from twin.settings import KUBEEDGE_FIELD

if TYPE_CHECKING:
    from twin.service import TwinService

Consumer = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
_STATES = {"online": DeviceState.ONLINE, "offline": DeviceState.OFFLINE}


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def to_kubeedge_value(value: JsonValue) -> str:
    """KubeEdge twin values are strings: strings pass, anything else becomes compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def from_kubeedge_value(value: JsonValue, type_name: str | None) -> JsonValue:
    """Read a KubeEdge value with the property's model type (see the module docstring)."""
    if not isinstance(value, str) or type_name in (PropertyType.STRING, PropertyType.BYTES):
        return value
    if type_name == PropertyType.BOOLEAN and value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's stack
        return value


_MAX_MS = 253_402_300_799_999
"""The last millisecond of year 9999: later (or huge) timestamps are refused, not overflowed."""

_MODELS: dict[ket.KubeEdgeAction, type[ke.BaseMessage]] = {
    ket.KubeEdgeAction.TWIN_UPDATE: ke.DeviceTwinUpdate,
    ket.KubeEdgeAction.TWIN_GET: ke.BaseMessage,
    ket.KubeEdgeAction.STATE_UPDATE: ke.DeviceStateUpdate,
}


def read_request(action: ket.KubeEdgeAction, payload: bytes) -> ke.BaseMessage:
    """Parse the request of `action` (an empty get asks for everything).

    Raises:
        SchemaError: the payload is not that KubeEdge message; the reason says why.
    """
    model = _MODELS[action]
    if action is ket.KubeEdgeAction.TWIN_GET and not payload:
        return model()
    if len(payload) > MAX_JSON_PAYLOAD:  # before parsing: extra fields are ignored, not free
        raise SchemaError(f"payload of {len(payload)} bytes exceeds {MAX_JSON_PAYLOAD}")
    try:
        message = model.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "<root>"
        raise SchemaError(f"invalid KubeEdge {action} message: {where}: {first['msg']}") from exc
    if isinstance(message, ke.DeviceTwinUpdate):
        _check_update(message)
    return message


def _check_update(update: ke.DeviceTwinUpdate) -> None:
    """What KubeEdge's types leave open: property names and timestamps must be usable.

    A property name becomes a key of the twin document (a `Name`): one that is not would be
    stored and then break every later read of the device's document.
    """
    for name, twin in update.twin.items():
        try:
            check_name(name)
        except InvalidName as exc:
            raise SchemaError(f"invalid KubeEdge twin/update message: twin: {exc}") from exc
        for side in (twin.expected, twin.actual):
            stamp = side.metadata.timestamp if side and side.metadata else None
            if stamp is not None and not 0 <= stamp <= _MAX_MS:
                raise SchemaError(
                    f"invalid KubeEdge twin/update message: twin.{name}: timestamp {stamp} "
                    "is not milliseconds between 1970 and 9999"
                )


def to_msg_twin(prop: TwinProperty) -> ke.MsgTwin:
    """One property of our document in KubeEdge's shape."""

    def side(value: Any) -> ke.TwinValue | None:
        if value is None:
            return None
        return ke.TwinValue(
            value=to_kubeedge_value(value.value),
            metadata=ke.ValueMetadata(timestamp=_ms(value.timestamp)),
        )

    return ke.MsgTwin(
        expected=side(prop.desired),
        actual=side(prop.reported),
        optional=False,
        metadata=ke.TypeMetadata(type=prop.type or "string"),
        expected_version=(
            ke.TwinVersion(cloud=prop.desired.version.cloud, edge=prop.desired.version.edge)
            if prop.desired
            else None
        ),
        actual_version=(
            ke.TwinVersion(cloud=prop.reported.version.cloud, edge=prop.reported.version.edge)
            if prop.reported
            else None
        ),
    )


def _dump(message: ke.BaseMessage) -> bytes:
    return message.model_dump_json(exclude_none=True).encode()


class KubeEdgeAdapter:
    """Serves KubeEdge's twin topics for a `TwinService` (built by the service when opted in)."""

    def __init__(self, service: TwinService, *, bus: MqttClient) -> None:
        self._service = service
        self._bus = bus
        self._ids: dict[str, set[str]] = {}
        self.handled = 0

    async def check_broker(self, timeout: float = 2.0) -> None:
        """Prove the broker delivers a client's publish to a ``$hw/...`` topic back to it.

        amqtt (the embedded broker) refuses such publishes silently (MQTT-4.7.2-1), so a
        KubeEdge app would wait forever for its results; better to refuse to start.

        Raises:
            DollarTopicsRefused: nothing came back within `timeout` seconds.

        """
        topic = ket.probe("ef-" + new_message_id()[:12])
        async with self._bus.subscribe(topic, maxsize=1) as sub:
            await self._bus.publish(topic, b"probe", timeout=timeout)
            try:
                async with asyncio.timeout(timeout):
                    await anext(aiter(sub))
            except TimeoutError:
                raise DollarTopicsRefused(
                    f"{KUBEEDGE_FIELD}: the broker does not deliver client publishes to "
                    f"'$hw/...' topics (the embedded amqtt refuses '$' topics); run Mosquitto "
                    f"(broker.url) or set {KUBEEDGE_FIELD}: false"
                ) from None

    def consumers(self) -> dict[str, Consumer]:
        """One consumer task per request filter, by task name."""
        return {name: self._consumer(pattern) for name, pattern in ket.request_filters().items()}

    def _consumer(self, pattern: str) -> Consumer:
        async def consume(ready: asyncio.Event) -> None:
            async with self._bus.subscribe(pattern, maxsize=1000) as sub:
                ready.set()
                async for message in sub:
                    await self._handle(message)

        return consume

    async def _handle(self, message: InboundMessage) -> None:
        parsed = ket.parse(message.topic)
        if parsed is None:
            await self._service.dead_letter(message, "not a KubeEdge device topic")
            return
        self._ids.setdefault(parsed.device, set()).add(parsed.device_id)
        self.handled += 1
        try:
            request = read_request(parsed.action, message.payload)
        except SchemaError as exc:
            await self._service.dead_letter(message, exc.reason)
            return
        if isinstance(request, ke.DeviceTwinUpdate):
            await self._update(parsed, request)
        elif isinstance(request, ke.DeviceStateUpdate):
            await self._state(parsed, request)
        else:
            await self._get(parsed, request)

    async def _update(self, topic: ket.KubeEdgeTopic, update: ke.DeviceTwinUpdate) -> None:
        service, device = self._service, topic.device
        types = {n: p.type for n, p in service.store.document(device).properties.items()}
        expected = {
            n: from_kubeedge_value(t.expected.value, types.get(n))
            for n, t in update.twin.items()
            if t.expected is not None
        }
        actual = [
            (
                device,
                n,
                from_kubeedge_value(t.actual.value, types.get(n)),
                (t.actual.metadata.timestamp / 1000)
                if t.actual.metadata and t.actual.metadata.timestamp
                else now(),
            )
            for n, t in update.twin.items()
            if t.actual is not None
        ]
        if actual:
            await service.report(actual)
        if expected:
            request = TwinDesiredSet(
                device=device,
                values=expected,
                source=TwinSource.APP,
                correlation_id=update.event_id,
            )
            try:
                outcome = await service.apply_desired(request)
            except TwinUpdateRefused as exc:
                await service.publish_error(
                    TwinError(
                        device=device,
                        code=exc.code,
                        reason=exc.reason,
                        properties=exc.properties,
                        correlation_id=update.event_id or None,
                    )
                )
                return
            await service.after_desired(device, outcome)
        result = ke.DeviceTwinUpdate(
            event_id=update.event_id, timestamp=_ms(time.time()), twin=update.twin
        )
        await self._bus.publish(ket.twin_update_result(topic.device_id), _dump(result))

    async def _get(self, topic: ket.KubeEdgeTopic, request: ke.BaseMessage) -> None:
        document = self._service.store.document(topic.device)
        result = ke.DeviceTwinResult(
            event_id=request.event_id or new_message_id(),
            timestamp=_ms(time.time()),
            twin={name: to_msg_twin(prop) for name, prop in document.properties.items()},
        )
        await self._bus.publish(ket.twin_get_result(topic.device_id), _dump(result))

    async def _state(self, topic: ket.KubeEdgeTopic, update: ke.DeviceStateUpdate) -> None:
        state = _STATES.get(update.state.lower(), DeviceState.DEGRADED)
        await self._service.set_state(topic.device, state, f"kubeedge: {update.state}")
        echo = ke.DeviceStateUpdate(
            event_id=update.event_id, timestamp=_ms(time.time()), state=update.state
        )
        await self._bus.publish(ket.state_update_result(topic.device_id), _dump(echo))

    async def on_change(self, document: TwinDocument) -> None:
        """Publish KubeEdge's delta (only when expected differs from actual, as edgecore)."""
        delta = document.delta()
        if not delta:
            return
        message = ke.DeviceTwinDelta(
            event_id=new_message_id(),
            timestamp=_ms(document.timestamp),
            twin={name: to_msg_twin(prop) for name, prop in document.properties.items()},
            delta={name: to_kubeedge_value(value) for name, value in delta.items()},
        )
        payload = _dump(message)
        for kube_id in sorted(self._ids.get(document.device, {document.device})):
            await self._bus.publish(ket.twin_update_delta(kube_id), payload)
