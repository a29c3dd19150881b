"""The OPC UA driver: asyncua client, data-change subscriptions, typed writes, security.

Unlike KubeEdge's OPC UA mapper, which polls, values arrive through a subscription with the
configured sampling interval; polling at the collect cycle is only the fallback when the
server refuses to create a subscription.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from mappers.device import DeviceInstance, PropertySpec
from mappers.driver import ReadResult
from mappers.errors import (
    DeviceRefused,
    DeviceTimeout,
    DeviceUnavailable,
    InvalidValue,
    MapperError,
    ValueOutOfRange,
)
from mappers.opcua.visitor import OpcUaConnection, SecurityMode, SecurityPolicy

log = logging.getLogger(__name__)

CHANGE_QUEUE = 10_000
"""Pending data changes; when full the oldest is dropped (a newer value supersedes it)."""

_MODES = {
    SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
    SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}
_INT_RANGES = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}


def coerce_variant(value: object, vtype: ua.VariantType) -> ua.Variant:
    """`value` as a Variant of the node's own type (a JSON 3 written to a Double node is 3.0).

    Raises:
        InvalidValue: the value cannot take the type.
        ValueOutOfRange: an integer outside the type's range.

    """
    if vtype in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise InvalidValue(f"{value!r} is not an integer for {vtype.name}")
        low, high = _INT_RANGES[vtype]
        if not low <= int(value) <= high:
            raise ValueOutOfRange(f"{value} does not fit {vtype.name} [{low}, {high}]")
        return ua.Variant(int(value), vtype)
    if vtype in (ua.VariantType.Float, ua.VariantType.Double):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidValue(f"{value!r} is not a number for {vtype.name}")
        return ua.Variant(float(value), vtype)
    if vtype is ua.VariantType.Boolean:
        if not isinstance(value, bool):
            raise InvalidValue(f"{value!r} is not a boolean")
        return ua.Variant(value, vtype)
    if vtype is ua.VariantType.String:
        return ua.Variant(str(value), vtype)
    return ua.Variant(value, vtype)


class _Handler:
    """asyncua calls this synchronously from its receive task; we only enqueue."""

    def __init__(self, queue: asyncio.Queue[tuple[PropertySpec, object]]) -> None:
        self.queue = queue
        self.by_node: dict[ua.NodeId, PropertySpec] = {}

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        prop = self.by_node.get(node.nodeid)
        if prop is None:
            return
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait((prop, val))


class OpcUaDriver:
    """One OPC UA server session."""

    def __init__(self, device: DeviceInstance) -> None:
        if device.opcua is None:
            raise ValueError(f"device {device.name!r} has no opcua connection")
        self.connection: OpcUaConnection = device.opcua
        self.requests = 0
        self._client: Client | None = None
        self._nodes: dict[str, Node] = {}
        self._changes: asyncio.Queue[tuple[PropertySpec, object]] = asyncio.Queue(CHANGE_QUEUE)

    @property
    def connected(self) -> bool:
        """True while a session is open."""
        return self._client is not None

    async def connect(self) -> None:
        """Open a secure channel and session (with user and security as configured)."""
        await self.close()
        conn = self.connection
        client = Client(conn.url, timeout=conn.timeout_s)
        client.session_timeout = 60_000
        if conn.username is not None:
            client.set_user(conn.username)
            client.set_password(conn.password or "")
        try:
            if conn.security_policy is SecurityPolicy.BASIC256SHA256:
                await client.set_security(
                    SecurityPolicyBasic256Sha256,
                    certificate=str(conn.certificate),
                    private_key=str(conn.private_key),
                    server_certificate=(
                        str(conn.server_certificate) if conn.server_certificate else None
                    ),
                    mode=_MODES[conn.security_mode],
                )
            async with asyncio.timeout(conn.timeout_s * 2):
                await client.connect()
        except (TimeoutError, OSError, UaError, ValueError) as exc:
            await _disconnect(client)
            raise DeviceUnavailable(f"connect to {conn.url} failed: {exc!r}") from exc
        self._client = client
        self._nodes.clear()

    async def close(self) -> None:
        """Close the session; safe twice."""
        client, self._client = self._client, None
        if client is not None:
            await _disconnect(client)

    def _require(self) -> Client:
        if self._client is None:
            raise DeviceUnavailable("not connected")
        return self._client

    async def _node(self, prop: PropertySpec) -> Node:
        node = self._nodes.get(prop.name)
        if node is not None:
            return node
        visitor = prop.opcua
        if visitor is None:  # pragma: no cover - validated by DeviceInstance
            raise ValueError(f"property {prop.name!r} has no opcua visitor")
        client = self._require()
        if visitor.node_id is not None:
            node = client.get_node(visitor.node_id)
        else:
            path = [part for part in (visitor.browse_path or "").split("/") if part]
            try:
                node = await client.nodes.objects.get_child(path)
            except UaStatusCodeError as exc:
                raise DeviceRefused(f"browse path {visitor.browse_path!r}: {exc}") from exc
        self._nodes[prop.name] = node
        return node

    async def _guard(self, coro: Any) -> Any:
        self.requests += 1
        try:
            async with asyncio.timeout(self.connection.timeout_s):
                return await coro
        except TimeoutError as exc:
            raise DeviceTimeout(f"no answer within {self.connection.timeout_s} s") from exc
        except UaStatusCodeError as exc:
            raise DeviceRefused(str(exc)) from exc
        except (ConnectionError, OSError, UaError) as exc:
            raise DeviceUnavailable(f"connection lost: {exc!r}") from exc

    async def read(self, props: Sequence[PropertySpec]) -> ReadResult:
        """Read all `props` in one Read service call; on a bad status, node by node."""
        result: ReadResult = {}
        nodes: list[tuple[PropertySpec, Node]] = []
        for prop in props:
            try:
                nodes.append((prop, await self._node(prop)))
            except DeviceRefused as exc:
                result[prop.name] = exc
        client = self._require()
        try:
            values = await self._guard(client.read_values([n for _, n in nodes]))
        except DeviceRefused:
            for prop, node in nodes:
                try:
                    result[prop.name] = await self._guard(node.read_value())
                except DeviceRefused as exc:
                    result[prop.name] = exc
            return result
        for (prop, _), value in zip(nodes, values, strict=True):
            result[prop.name] = value
        return result

    async def write(self, prop: PropertySpec, value: object) -> None:
        """Write with the node's own variant type."""
        node = await self._node(prop)
        vtype = await self._guard(node.read_data_type_as_variant_type())
        variant = coerce_variant(value, vtype)
        await self._guard(node.write_value(ua.DataValue(variant)))

    async def watch(self, props: Sequence[PropertySpec]) -> bool:
        """Subscribe to data changes of every property (after each connect)."""
        if not self.connection.subscribe:
            return False
        client = self._require()
        handler = _Handler(self._changes)
        try:
            for prop in props:
                node = await self._node(prop)
                handler.by_node[node.nodeid] = prop
            subscription = await self._guard(
                client.create_subscription(self.connection.sampling_ms, handler)
            )
            await self._guard(subscription.subscribe_data_change(list(self._nodes.values())))
        except MapperError as exc:
            log.warning("%s: subscriptions refused (%s); polling instead", self.connection.url, exc)
            return False
        return True

    async def next_change(self, timeout: float) -> tuple[PropertySpec, object] | None:
        """The next data change; checks the session when none came within `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                return await self._changes.get()
        except TimeoutError:
            pass
        # Quiet is normal (values may not change); prove the session is alive with a cheap
        # read of the server's state (Part 5, 12.2: Server_ServerStatus_State).
        client = self._require()
        await self._guard(client.nodes.server_state.read_value())
        return None


async def _disconnect(client: Client) -> None:
    try:
        async with asyncio.timeout(2):
            await client.disconnect()
    except Exception:
        client.disconnect_socket()
