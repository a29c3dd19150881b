"""The MQTT client every edgefabric service uses.

One connection per client, kept up by one background loop with capped, jittered back-off;
subscriptions are remembered and renewed after every reconnect. It speaks MQTT v5 where the
broker does (Mosquitto) and falls back to 3.1.1 when the broker refuses v5 (amqtt), so every
request/response in edgefabric carries its reply topic and correlation id in the body too.

The wire protocol is our own small implementation (`bus.mqtt_wire`, `bus.mqtt_connection`)
rather than paho-mqtt: measured here, paho (with or without aiomqtt on top) tops out near
3,500 QoS 1 messages/s per process with publisher and subscriber in one event loop, and an edge
process moves every reading three or four times; see BENCHMARKS.md for the comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator
from enum import StrEnum
from types import TracebackType
from typing import Literal, Self

from bus import mqtt_wire as wire
from bus.errors import NotConnected
from bus.lifecycle import ServiceTasks
from bus.mqtt_connection import (
    ConnectRefused,
    MqttConnection,
    PublishRefused,
    open_connection,
)
from bus.mqtt_wire import Packet, PacketType
from bus.subscription import InboundMessage, Overflow, Subscription
from bus.url import parse_broker_url

log = logging.getLogger(__name__)

_PERSISTENT_SESSION_EXPIRY_S = 7 * 24 * 3600
_UNSUPPORTED_VERSION = (0x01, 0x84)  # 3.1.1 "unacceptable protocol version" / v5 0x84
_INBOUND_HARD_LIMIT = 100_000
_UNCLAIMED_MAX = 1000


class ConnectionState(StrEnum):
    """Where the client's connection is in its life."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


ProtocolChoice = Literal["auto", "3.1.1", "5"]
DEFAULT_MAX_PACKET = 128 * 1024 * 1024
"""Largest packet a client takes; brokers we configure refuse bigger ones from publishers."""


class SubscribeRefused(NotConnected):
    """The broker refused a subscription (e.g. an ACL denies the filter)."""


class MqttClient:
    """An async-context-managed MQTT client with reconnects, bounded inboxes and QoS 1 defaults.

    Entering waits (up to `connect_timeout`) for the first connection, so a service that cannot
    reach its broker fails at start-up with a clear error; later outages are ridden out by the
    reconnect loop while `publish` fails fast with `NotConnected` after `publish_timeout`.

    Inbound QoS 1 messages are acknowledged once they are in a subscriber's inbox, so the
    broker's in-flight window (v5 Receive Maximum, Mosquitto's max_inflight_messages) bounds
    what waits here: a slow consumer costs broker-side queueing, not this process's memory.

    Args:
        url: ``mqtt://host:port`` or ``mqtts://host:port`` (credentials may be in the URL).
        client_id: MQTT client identifier; also names the background tasks.
        clean_session: False keeps the broker session (subscriptions and unacked QoS 1
            messages) across reconnects; the bridge uses that with `manual_ack`.
        manual_ack: inbound QoS 1 messages are acknowledged only by `InboundMessage.ack`.
        protocol: "auto" tries v5 and falls back to 3.1.1 when the broker refuses it.
        max_inflight: QoS 1 publishes awaiting PUBACK at once.
        max_packet: largest inbound packet accepted, announced to a v5 broker on persistent
            sessions (which then discards bigger ones for this client); a bigger one drops
            the connection.
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
        max_packet: int = DEFAULT_MAX_PACKET,
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
        self._max_packet = max_packet
        self._tls_context = tls_context
        if self._address.tls and tls_context is None:
            self._tls_context = ssl.create_default_context()
        self._username = username or self._address.username
        self._password = password or self._address.password
        self._subscriptions: list[Subscription] = []
        self._conn: MqttConnection | None = None
        self._connected = asyncio.Event()
        self._inflight = asyncio.Semaphore(max_inflight)
        self._inbound: deque[tuple[MqttConnection, Packet]] = deque()
        self._inbound_ready = asyncio.Event()
        # A persistent session is redelivered right after CONNACK, before the service has
        # re-entered its subscriptions: hold those messages (unacked) until one claims them.
        self._unclaimed: deque[InboundMessage] = deque(maxlen=_UNCLAIMED_MAX)
        self._tasks = ServiceTasks(f"bus.mqtt[{client_id}]")
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
        await self._tasks.__aenter__()
        self._tasks.spawn(self._connection_loop(), "connection")
        self._tasks.spawn(self._pump(), "inbound")
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
        if self.state is ConnectionState.CLOSED:
            return
        self.state = ConnectionState.CLOSED
        self._connected.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        await self._tasks.__aexit__(exc_type, exc, tb)

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

    # ---- publishing ------------------------------------------------------------------------

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

        A publish interrupted by a lost connection is sent again on the next one, so delivery
        is at least once; consumers de-duplicate by `message_id`. `response_topic` and
        `correlation_data` become v5 properties when the broker speaks v5; callers put them
        in the message body as well for 3.1.1 peers.

        Raises:
            NotConnected: the broker was unreachable for the whole timeout.
            PublishRefused: a v5 broker refused the message (e.g. not authorised).
        """
        budget = self._publish_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(budget):
                while True:
                    await self._connected.wait()
                    conn = self._conn
                    if conn is None:  # pragma: no cover - cleared between wait and use
                        continue
                    try:
                        await self._publish_on(
                            conn,
                            topic=topic,
                            payload=payload,
                            qos=qos,
                            retain=retain,
                            response_topic=response_topic,
                            correlation_data=correlation_data,
                        )
                    except PublishRefused:
                        raise
                    except NotConnected:
                        await asyncio.sleep(0.02)  # the loop notices and reconnects
                    else:
                        return
        except TimeoutError as exc:
            raise NotConnected(f"publish to {topic!r} not acknowledged within {budget} s") from exc

    async def _publish_on(
        self,
        conn: MqttConnection,
        *,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        response_topic: str | None,
        correlation_data: bytes | None,
    ) -> None:
        props: wire.Properties = {}
        if conn.version == wire.V5:
            if response_topic is not None:
                props[wire.RESPONSE_TOPIC] = response_topic
            if correlation_data is not None:
                props[wire.CORRELATION_DATA] = correlation_data
        if qos == 0:
            conn.send(
                wire.publish(
                    topic=topic,
                    payload=payload,
                    qos=0,
                    retain=retain,
                    packet_id=0,
                    version=conn.version,
                    properties=props,
                )
            )
            return
        async with self._inflight:
            packet_id = conn.next_packet_id()
            ack = conn.expect(PacketType.PUBACK, packet_id)
            try:
                conn.send(
                    wire.publish(
                        topic=topic,
                        payload=payload,
                        qos=1,
                        retain=retain,
                        packet_id=packet_id,
                        version=conn.version,
                        properties=props,
                    )
                )
                result = await ack
            finally:
                conn.forget(PacketType.PUBACK, packet_id)
        if result.reason >= 0x80:
            raise PublishRefused(topic, result.reason)

    # ---- subscribing -----------------------------------------------------------------------

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

        Raises:
            SubscribeRefused: the broker refused the filter.
        """
        sub = Subscription(topic_filter, qos=qos, maxsize=maxsize, overflow=overflow)
        self._subscriptions.append(sub)
        try:
            for held in [m for m in self._unclaimed if sub.matches(m.topic)]:
                self._unclaimed.remove(held)
                await sub.deliver(held)
            conn = self._conn
            if conn is not None and self._connected.is_set():
                try:
                    await self._subscribe_on(conn, [(topic_filter, qos)])
                except SubscribeRefused:
                    raise
                except (NotConnected, TimeoutError):
                    pass  # the connection loop subscribes again once it is back
            yield sub
        finally:
            self._subscriptions.remove(sub)
            conn = self._conn
            still_wanted = any(s.topic_filter == topic_filter for s in self._subscriptions)
            if conn is not None and conn.open and not still_wanted:
                await self._unsubscribe_on(conn, topic_filter)

    async def _subscribe_on(self, conn: MqttConnection, filters: list[tuple[str, int]]) -> None:
        packet_id = conn.next_packet_id()
        ack = conn.expect(PacketType.SUBACK, packet_id)
        try:
            conn.send(wire.subscribe(packet_id, filters, conn.version))
            async with asyncio.timeout(self._connect_timeout):
                result = await ack
        finally:
            conn.forget(PacketType.SUBACK, packet_id)
        refused = [f for (f, _), code in zip(filters, result.reasons, strict=False) if code >= 0x80]
        if refused:
            raise SubscribeRefused(f"broker refused subscription to {', '.join(refused)}")

    async def _unsubscribe_on(self, conn: MqttConnection, topic_filter: str) -> None:
        packet_id = conn.next_packet_id()
        ack = conn.expect(PacketType.UNSUBACK, packet_id)
        try:
            conn.send(wire.unsubscribe(packet_id, [topic_filter], conn.version))
            async with asyncio.timeout(2):
                await ack
        except (NotConnected, TimeoutError):
            pass  # the session ends with the connection anyway
        finally:
            conn.forget(PacketType.UNSUBACK, packet_id)

    # ---- inbound ---------------------------------------------------------------------------

    def _on_publish(self, conn: MqttConnection, packet: Packet) -> None:
        self._inbound.append((conn, packet))
        self._inbound_ready.set()
        if len(self._inbound) >= _INBOUND_HARD_LIMIT:
            # Only a broker that ignores flow control gets here (QoS 0 floods, or a broker
            # without in-flight limits); stop reading rather than grow without bound.
            conn.pause_reading()

    async def _pump(self) -> None:
        while True:
            await self._inbound_ready.wait()
            self._inbound_ready.clear()
            while self._inbound:
                conn, packet = self._inbound.popleft()
                if conn.paused and len(self._inbound) < _INBOUND_HARD_LIMIT // 2:
                    conn.resume_reading()
                await self._deliver(conn, packet)

    async def _deliver(self, conn: MqttConnection, packet: Packet) -> None:
        """Hand a message to every matching subscription, then acknowledge it.

        Acknowledging only after the message is in an inbox is the flow control: a broker
        keeps at most its in-flight window of unacknowledged QoS 1 messages per client (v5
        Receive Maximum, Mosquitto's max_inflight_messages on 3.1.1), so a full inbox slows
        the broker instead of this process's memory, and the socket keeps being read, so
        acknowledgements of our own publishes never wait behind a slow subscriber.
        """
        acknowledge = None
        if packet.qos:
            puback = wire.puback(packet.packet_id)

            def acknowledge(conn: MqttConnection = conn, puback: bytes = puback) -> None:
                if conn.open:
                    conn.send(puback)

        props = packet.properties
        response_topic = props.get(wire.RESPONSE_TOPIC)
        correlation = props.get(wire.CORRELATION_DATA)
        message = InboundMessage(
            topic=packet.topic,
            payload=packet.payload,
            qos=packet.qos,
            retain=packet.retain,
            response_topic=response_topic if isinstance(response_topic, str) else None,
            correlation_data=correlation if isinstance(correlation, bytes) else None,
            _acknowledge=acknowledge if self._manual_ack else None,
        )
        delivered = False
        for sub in list(self._subscriptions):
            if sub.matches(message.topic):
                await sub.deliver(message)
                delivered = True
        if acknowledge is None:
            return
        if not self._manual_ack:
            acknowledge()
        elif not delivered:
            if self._clean_session:
                acknowledge()
            else:
                self._unclaimed.append(message)

    # ---- connection ------------------------------------------------------------------------

    def _connect_packet(self, version: int) -> bytes:
        props: wire.Properties = {}
        if version == wire.V5 and not self._clean_session:
            props[wire.SESSION_EXPIRY] = _PERSISTENT_SESSION_EXPIRY_S
            # The broker then discards what we could not take instead of sending it, which
            # would drop the connection and come back with the session on every reconnect.
            # (Not on clean sessions: a 3.1.1-only amqtt stalls on any CONNECT properties,
            # costing the v5 probe's timeout on every connect.)
            props[wire.MAXIMUM_PACKET_SIZE] = self._max_packet
        return wire.connect(
            client_id=self.client_id,
            version=version,
            clean=self._clean_session,
            keepalive=self._keepalive,
            username=self._username,
            password=self._password,
            properties=props,
        )

    async def _open(
        self, version: int, *, handshake_timeout: float | None = None
    ) -> MqttConnection:
        conn = await open_connection(
            self._address.host,
            self._address.port,
            version=version,
            on_publish=self._on_publish,
            max_packet=self._max_packet,
            ssl_context=self._tls_context if self._address.tls else None,
            timeout=self._connect_timeout,
        )
        try:
            await conn.handshake(
                self._connect_packet(version), handshake_timeout or self._connect_timeout
            )
        except BaseException:
            conn.abort(None)  # also when cancelled mid-handshake: never leak the socket
            raise
        return conn

    async def _handshake(self, version: int) -> MqttConnection:
        """Connect with `version`; in auto mode a v5 refusal retries at once with 3.1.1.

        A 3.1.1-only broker may refuse a v5 CONNECT, close the socket, or (amqtt, when the
        CONNECT carries properties) wait for bytes that never come; the probe's short
        timeout covers the last case.
        """
        if self._protocol_choice != "auto" or version == wire.V311:
            return await self._open(version)
        try:
            return await self._open(wire.V5, handshake_timeout=min(self._connect_timeout, 2.0))
        except ConnectRefused as exc:
            if exc.code not in _UNSUPPORTED_VERSION:
                raise
        except NotConnected as exc:
            if "cannot reach" in str(exc):
                raise
        return await self._open(wire.V311)

    async def _connection_loop(self) -> None:
        version = wire.V311 if self._protocol_choice == "3.1.1" else wire.V5
        backoff = self._backoff_initial
        while True:
            self.state = ConnectionState.CONNECTING
            try:
                conn = await self._handshake(version)
            except NotConnected as exc:
                log.debug("%s: %s", self.client_id, exc)
            else:
                version = conn.version
                backoff = self._backoff_initial
                await self._serve(conn)
            self.state = ConnectionState.DISCONNECTED
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(self._backoff_max, backoff * 2)

    async def _serve(self, conn: MqttConnection) -> None:
        """Renew subscriptions, then keep the connection alive until it drops."""
        self.protocol_version = "5" if conn.version == wire.V5 else "3.1.1"
        try:
            filters = list({s.topic_filter: s.qos for s in self._subscriptions}.items())
            if filters:
                await self._subscribe_on(conn, filters)
            self._conn = conn
            self.state = ConnectionState.CONNECTED
            self.connects += 1
            self._connected.set()
            log.debug(
                "%s connected to %s (MQTT %s)", self.client_id, self.url, self.protocol_version
            )
            await self._keep_alive(conn)
        except (NotConnected, TimeoutError) as exc:
            log.debug("%s: connection to %s lost: %s", self.client_id, self.url, exc)
        finally:
            self._connected.clear()
            self._conn = None
            conn.abort(None)

    async def _keep_alive(self, conn: MqttConnection) -> None:
        loop = asyncio.get_running_loop()
        interval = max(self._keepalive / 2, 0.5)
        while True:
            try:
                async with asyncio.timeout(interval):
                    await asyncio.shield(conn.closed)
            except TimeoutError:
                pass
            else:
                return
            if loop.time() - conn.last_received > self._keepalive * 1.5:
                log.warning(
                    "%s: no traffic from %s for %.0f s; reconnecting",
                    self.client_id,
                    self.url,
                    self._keepalive * 1.5,
                )
                return
            conn.send(wire.PINGREQ)
