"""The MQTT client every edgefabric service uses.

One connection per client, kept up by one background loop with capped, jittered back-off;
subscriptions are remembered and renewed after every reconnect. It speaks MQTT v5 where the
broker does (Mosquitto) and falls back to 3.1.1 when the broker refuses v5 (amqtt), so every
request/response in edgefabric carries its reply topic and correlation id in the body too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import AsyncIterator
from enum import StrEnum
from types import TracebackType
from typing import Literal, Self

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bus.errors import NotConnected
from bus.subscription import InboundMessage, Overflow, Subscription
from bus.url import parse_broker_url

log = logging.getLogger(__name__)

_UNSUPPORTED_PROTOCOL_CODES = {1, 132}  # 3.1.1 "unacceptable protocol version" / v5 0x84
_PERSISTENT_SESSION_EXPIRY_S = 7 * 24 * 3600


def _code_of(exc: aiomqtt.MqttCodeError) -> int:
    """The numeric CONNACK code: paho gives a ReasonCode on v5 and an int on 3.1.1."""
    rc = exc.rc
    value = getattr(rc, "value", rc)
    return int(value) if isinstance(value, int) else -1


class ConnectionState(StrEnum):
    """Where the client's connection is in its life."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


ProtocolChoice = Literal["auto", "3.1.1", "5"]


class MqttClient:
    """An async-context-managed MQTT client with reconnects, bounded inboxes and QoS 1 defaults.

    Entering waits (up to `connect_timeout`) for the first connection, so a service that cannot
    reach its broker fails at start-up with a clear error; later outages are ridden out by the
    reconnect loop while `publish` fails fast with `NotConnected` after `publish_timeout`.

    Args:
        url: ``mqtt://host:port`` or ``mqtts://host:port`` (credentials may be in the URL).
        client_id: MQTT client identifier; also names the background task.
        clean_session: False keeps the broker session (subscriptions and unacked QoS 1
            messages) across reconnects; the bridge uses that with `manual_ack`.
        manual_ack: inbound QoS 1 messages are acknowledged only by `InboundMessage.ack`.
        protocol: "auto" tries v5 and falls back to 3.1.1 when the broker refuses it.
        tls_context: used for ``mqtts://``; the system defaults when None.

    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        clean_session: bool = True,
        manual_ack: bool = False,
        protocol: ProtocolChoice = "auto",
        keepalive: int = 15,
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        max_inflight: int = 1000,
        tls_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._address = parse_broker_url(url)
        self.client_id = client_id
        self._clean_session = clean_session
        self._manual_ack = manual_ack
        self._protocol_choice = protocol
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_inflight = max_inflight
        self._tls_context = tls_context
        self._username = username or self._address.username
        self._password = password or self._address.password
        self._subscriptions: list[Subscription] = []
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task_group: asyncio.TaskGroup | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.state = ConnectionState.NEW
        self.protocol_version: Literal["3.1.1", "5"] | None = None
        self.connects = 0

    @property
    def url(self) -> str:
        """The broker URL without credentials."""
        return self._address.url

    @property
    def is_v5(self) -> bool:
        """True when the current connection speaks MQTT v5."""
        return self.protocol_version == "5"

    async def __aenter__(self) -> Self:
        self._task_group = asyncio.TaskGroup()
        await self._task_group.__aenter__()
        self._loop_task = self._task_group.create_task(
            self._connection_loop(), name=f"bus.mqtt[{self.client_id}].connection"
        )
        try:
            await self.wait_connected(self._connect_timeout)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task_group is None:
            return
        group, self._task_group = self._task_group, None
        if self._loop_task is not None:
            self._loop_task.cancel()
        self.state = ConnectionState.CLOSED
        self._connected.clear()
        await group.__aexit__(None, None, None)

    async def wait_connected(self, timeout: float) -> None:
        """Wait until the broker connection is up.

        Raises:
            NotConnected: not connected within `timeout` seconds.

        """
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError as exc:
            raise NotConnected(
                f"MQTT client {self.client_id!r}: no connection to {self.url} within {timeout} s"
            ) from exc

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish and, for QoS 1, return once the broker acknowledged it.

        `response_topic` and `correlation_data` become v5 properties when the broker speaks v5;
        callers put them in the message body as well for 3.1.1 peers.

        Raises:
            NotConnected: the broker was unreachable for the whole timeout.

        """
        budget = self._publish_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(budget):
                while True:
                    await self._connected.wait()
                    client = self._client
                    if client is None:  # pragma: no cover - cleared between wait and use
                        continue
                    try:
                        await client.publish(
                            topic,
                            payload,
                            qos=qos,
                            retain=retain,
                            properties=self._publish_properties(response_topic, correlation_data),
                            timeout=budget,
                        )
                    except aiomqtt.MqttError:
                        # The connection dropped under us; the loop notices and reconnects.
                        await asyncio.sleep(0.05)
                    else:
                        return
        except TimeoutError as exc:
            raise NotConnected(f"publish to {topic!r} not acknowledged within {budget} s") from exc

    def _publish_properties(
        self, response_topic: str | None, correlation_data: bytes | None
    ) -> Properties | None:
        if not self.is_v5 or (response_topic is None and correlation_data is None):
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if response_topic is not None:
            props.ResponseTopic = response_topic
        if correlation_data is not None:
            props.CorrelationData = correlation_data
        return props

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        topic_filter: str,
        *,
        qos: int = 1,
        maxsize: int = 1000,
        overflow: Overflow = Overflow.BLOCK,
    ) -> AsyncIterator[Subscription]:
        """Subscribe for the lifetime of the `async with` block.

        The subscription survives reconnects; leaving the block unsubscribes.
        """
        sub = Subscription(topic_filter, qos=qos, maxsize=maxsize, overflow=overflow)
        self._subscriptions.append(sub)
        try:
            client = self._client
            if client is not None and self._connected.is_set():
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.subscribe(topic_filter, qos=qos)
            yield sub
        finally:
            self._subscriptions.remove(sub)
            client = self._client
            still_wanted = any(s.topic_filter == topic_filter for s in self._subscriptions)
            if client is not None and self._connected.is_set() and not still_wanted:
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    await client.unsubscribe(topic_filter, timeout=2)

    def _new_client(self, protocol: aiomqtt.ProtocolVersion) -> aiomqtt.Client:
        v5 = protocol is aiomqtt.ProtocolVersion.V5
        properties = None
        if v5 and not self._clean_session:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = _PERSISTENT_SESSION_EXPIRY_S
        client = aiomqtt.Client(
            self._address.host,
            self._address.port,
            identifier=self.client_id,
            protocol=protocol,
            clean_session=None if v5 else self._clean_session,
            # paho refuses clean_start on 3.1.1; there clean_session says the same thing.
            clean_start=(
                False if v5 and not self._clean_session else paho.MQTT_CLEAN_START_FIRST_ONLY
            ),
            keepalive=self._keepalive,
            timeout=self._connect_timeout,
            username=self._username,
            password=self._password,
            max_inflight_messages=self._max_inflight,
            properties=properties,
            tls_context=self._tls_context if self._address.tls else None,
        )
        # aiomqtt warns past 10 pending calls; services pipeline up to max_inflight on purpose.
        client.pending_calls_threshold = self._max_inflight
        if self._tls_context is None and self._address.tls:
            client._client.tls_set_context(ssl.create_default_context())
        if self._manual_ack:
            # aiomqtt has no manual-ack switch; paho's public API on its client is the way.
            client._client.manual_ack_set(True)
        return client

    async def _connection_loop(self) -> None:
        protocol = (
            aiomqtt.ProtocolVersion.V311
            if self._protocol_choice == "3.1.1"
            else aiomqtt.ProtocolVersion.V5
        )
        backoff = self._backoff_initial
        while True:
            self.state = ConnectionState.CONNECTING
            client = self._new_client(protocol)
            try:
                async with client:
                    self._client = client
                    self.protocol_version = (
                        "5" if protocol is aiomqtt.ProtocolVersion.V5 else "3.1.1"
                    )
                    for sub in list(self._subscriptions):
                        await client.subscribe(sub.topic_filter, qos=sub.qos)
                    self.state = ConnectionState.CONNECTED
                    self.connects += 1
                    self._connected.set()
                    backoff = self._backoff_initial
                    log.debug(
                        "%s connected to %s (MQTT %s)",
                        self.client_id,
                        self.url,
                        self.protocol_version,
                    )
                    await self._pump(client)
            except aiomqtt.MqttCodeError as exc:
                if (
                    self._protocol_choice == "auto"
                    and protocol is aiomqtt.ProtocolVersion.V5
                    and _code_of(exc) in _UNSUPPORTED_PROTOCOL_CODES
                ):
                    protocol = aiomqtt.ProtocolVersion.V311
                    continue
                log.warning("%s: broker %s: %s", self.client_id, self.url, exc)
            except aiomqtt.MqttError as exc:
                log.debug("%s: connection to %s lost: %s", self.client_id, self.url, exc)
            finally:
                self._connected.clear()
                self._client = None
            self.state = ConnectionState.DISCONNECTED
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(self._backoff_max, backoff * 2)

    async def _pump(self, client: aiomqtt.Client) -> None:
        paho_client = client._client
        async for raw in client.messages:
            props = raw.properties
            response_topic = getattr(props, "ResponseTopic", None) if props else None
            correlation = getattr(props, "CorrelationData", None) if props else None
            acknowledge = None
            if self._manual_ack and raw.qos > 0:
                mid, qos = raw.mid, raw.qos

                def acknowledge(mid: int = mid, qos: int = qos) -> None:
                    paho_client.ack(mid, qos)

            message = InboundMessage(
                topic=raw.topic.value,
                payload=bytes(raw.payload) if isinstance(raw.payload, bytes | bytearray) else b"",
                qos=raw.qos,
                retain=raw.retain,
                response_topic=response_topic,
                correlation_data=correlation,
                _acknowledge=acknowledge,
            )
            delivered = False
            for sub in list(self._subscriptions):
                if sub.matches(message.topic):
                    await sub.deliver(message)
                    delivered = True
            if not delivered and acknowledge is not None:
                acknowledge()
