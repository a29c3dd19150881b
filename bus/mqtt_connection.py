"""One MQTT connection over asyncio: packets in and out, acknowledgements matched by id.

It has no reconnect logic and no subscriptions: `bus.mqtt.MqttClient` owns those and makes a
new connection after a loss. Built on `asyncio.Protocol` rather than streams because the
per-message cost is what limits an edge box: a reading crosses the bus three or four times.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from bus import mqtt_wire as wire
from bus.errors import NotConnected
from bus.mqtt_wire import Packet, PacketType, ProtocolError


class ConnectRefused(NotConnected):
    """The broker answered CONNECT with a refusal code (bad credentials, wrong version...)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"broker refused the connection (return code {code:#x})")
        self.code = code


class PublishRefused(NotConnected):
    """A v5 broker acknowledged a publish with a failure reason (e.g. 0x87 not authorised)."""

    def __init__(self, topic: str, code: int) -> None:
        super().__init__(f"broker refused publish to {topic!r} (reason {code:#x})")
        self.topic = topic
        self.code = code


class MqttConnection(asyncio.Protocol):
    """The protocol object of one TCP (or TLS) connection to a broker.

    Args:
        version: 4 (3.1.1) or 5.
        on_publish: called for each inbound PUBLISH, in order, from the event loop.
        max_packet: inbound packets larger than this close the connection (checked on the
            length header, before the body is buffered).
    """

    def __init__(
        self, *, version: int, on_publish: Callable[[MqttConnection, Packet], None], max_packet: int
    ) -> None:
        self.version = version
        self._on_publish = on_publish
        self._max_packet = max_packet
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiters: dict[tuple[PacketType, int], asyncio.Future[Packet]] = {}
        self._connack: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next_id = 0
        self._ids_in_use: set[int] = set()
        self.last_received = asyncio.get_running_loop().time()
        self.paused = False

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (asyncio calls this once the socket is up)."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """Split the stream into packets; a malformed one drops the connection."""
        self._buffer += data
        self.last_received = asyncio.get_running_loop().time()
        try:
            while (found := wire.split_packet(self._buffer, self._max_packet)) is not None:
                first, start, end = found
                packet = wire.decode(first, memoryview(self._buffer)[start:end], self.version)
                del self._buffer[:end]
                self._dispatch(packet)
        except ProtocolError as exc:
            self.abort(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail everything still waiting, so no caller hangs on a dead connection."""
        error = NotConnected(f"connection lost: {exc}" if exc else "connection closed")
        for future in [self._connack, *self._waiters.values()]:
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    # ---- packets in ------------------------------------------------------------------------

    def _dispatch(self, packet: Packet) -> None:
        if packet.type is PacketType.PUBLISH:
            self._on_publish(self, packet)
        elif packet.type is PacketType.CONNACK:
            if not self._connack.done():
                self._connack.set_result(packet)
        elif packet.type in (PacketType.PUBACK, PacketType.SUBACK, PacketType.UNSUBACK):
            waiter = self._waiters.pop((packet.type, packet.packet_id), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(packet)
        elif packet.type is PacketType.DISCONNECT:
            self.abort(NotConnected(f"broker disconnected us (reason {packet.reason:#x})"))

    # ---- packets out -----------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """True until the connection is lost or closed."""
        return self._transport is not None and not self.closed.done()

    def send(self, data: bytes) -> None:
        """Queue bytes on the transport.

        Raises:
            NotConnected: the connection is gone.
        """
        if not self.open:
            raise NotConnected("connection closed")
        assert self._transport is not None
        self._transport.write(data)

    def next_packet_id(self) -> int:
        """A packet identifier not awaiting an acknowledgement (1..65535, 3.1.1 §2.3.1)."""
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._ids_in_use:
                self._ids_in_use.add(self._next_id)
                return self._next_id
        raise NotConnected("no free packet identifier: 65535 acknowledgements outstanding")

    def forget(self, kind: PacketType, packet_id: int) -> None:
        """Release a packet id once its acknowledgement arrived or its caller gave up."""
        self._waiters.pop((kind, packet_id), None)
        self._ids_in_use.discard(packet_id)

    def expect(self, kind: PacketType, packet_id: int) -> asyncio.Future[Packet]:
        """A future for the acknowledgement of `kind` carrying `packet_id`."""
        future: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self._waiters[(kind, packet_id)] = future
        return future

    async def handshake(self, connect_packet: bytes, timeout: float) -> Packet:
        """Send CONNECT and wait for CONNACK.

        Raises:
            ConnectRefused: the broker refused (its code is on the error).
            NotConnected: no CONNACK within `timeout`, or the connection dropped.
        """
        self.send(connect_packet)
        try:
            async with asyncio.timeout(timeout):
                connack = await self._connack
        except TimeoutError as exc:
            self.abort(None)
            raise NotConnected(f"no CONNACK within {timeout} s") from exc
        if connack.reason != 0:
            self.abort(None)
            raise ConnectRefused(connack.reason)
        return connack

    def pause_reading(self) -> None:
        """Stop reading from the socket (back-pressure to the broker)."""
        if self._transport is not None and not self.paused:
            self.paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Resume reading after `pause_reading`."""
        if self._transport is not None and self.paused:
            self.paused = False
            self._transport.resume_reading()

    def close(self) -> None:
        """Send DISCONNECT and close politely."""
        if self.open:
            assert self._transport is not None
            self._transport.write(wire.DISCONNECT)
            self._transport.close()

    def abort(self, exc: Exception | None) -> None:
        """Drop the connection at once (protocol error, keepalive expired)."""
        if self._transport is not None:
            self._transport.abort()
        if exc is not None and not self._connack.done():
            self._connack.set_exception(exc)


async def open_connection(
    host: str,
    port: int,
    *,
    version: int,
    on_publish: Callable[[MqttConnection, Packet], None],
    max_packet: int,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
) -> MqttConnection:
    """Open the TCP/TLS connection (the MQTT handshake is the caller's next step).

    Raises:
        NotConnected: refused, unreachable or not connected within `timeout`.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            _, protocol = await loop.create_connection(
                lambda: MqttConnection(
                    version=version, on_publish=on_publish, max_packet=max_packet
                ),
                host,
                port,
                ssl=ssl_context,
            )
    except (OSError, TimeoutError) as exc:
        raise NotConnected(f"cannot reach {host}:{port}: {exc}") from exc
    return protocol
