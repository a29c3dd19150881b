"""A simulated machine tool as an OPC UA server (asyncua), for the tests, bench and CLI.

Address space (namespace ``urn:edgefabric:machine``, index 2)::

    Objects/2:Machine
        2:SpindleSpeed   ns=2;s=Spindle.Speed   Double  rpm   ReadWrite
        2:Vibration      ns=2;s=Vibration       Double  mm/s
        2:Temperature    ns=2;i=1001            Float   degC
        2:Setpoint       ns=2;i=1002            Int32   rpm   ReadWrite
        2:Running        ns=2;s=Running         Boolean       ReadWrite

With `live=True` a task moves speed toward the setpoint and adds noise to vibration and
temperature. Security: policy None always; Basic256Sha256 Sign and SignAndEncrypt when a
certificate and key are given; username/password when `users` is given (anonymous is then
refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager

NAMESPACE = "urn:edgefabric:machine"
APPLICATION_URI = "urn:edgefabric:simulator:machine"


class _Users(UserManager):
    def __init__(self, users: dict[str, str]) -> None:
        self._users = users

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None and self._users.get(username) == password:
            return User(role=UserRole.Admin)
        return None


class OpcUaMachineSimulator:
    """An asyncua server with the machine's nodes, as an async context manager.

    `stop()` then `start()` restarts it on the same port with the same node values, which is
    how the tests check the mapper's reconnect and re-subscribe.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 4840,
        live: bool = False,
        period: float = 0.1,
        certificate: Path | None = None,
        private_key: Path | None = None,
        users: dict[str, str] | None = None,
        seed: int = 11,
    ) -> None:
        self.host = host
        self.port = port
        self._live = live
        self._period = period
        self._certificate = certificate
        self._private_key = private_key
        self._users = users
        self._rng = random.Random(seed)
        self._server: Server | None = None
        self._nodes: dict[str, Any] = {}
        self._values: dict[str, Any] = {
            "SpindleSpeed": 0.0,
            "Vibration": 0.0,
            "Temperature": 25.0,
            "Setpoint": 1200,
            "Running": False,
        }
        self._live_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The endpoint URL."""
        return f"opc.tcp://{self.host}:{self.port}/edgefabric/"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Build the address space and listen."""
        server = Server(user_manager=_Users(self._users) if self._users else None)
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("edgefabric machine simulator")
        await server.set_application_uri(APPLICATION_URI)
        policies = [ua.SecurityPolicyType.NoSecurity]
        if self._certificate is not None and self._private_key is not None:
            await server.load_certificate(str(self._certificate))
            await server.load_private_key(str(self._private_key))
            policies += [
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
        server.set_security_policy(policies)
        if self._users:
            server.set_security_IDs(["Username"])
        idx = await server.register_namespace(NAMESPACE)
        machine = await server.nodes.objects.add_object(
            ua.NodeId.from_string(f"ns={idx};s=Machine"), ua.QualifiedName("Machine", idx)
        )
        specs: list[tuple[str, ua.NodeId, ua.VariantType, bool]] = [
            (
                "SpindleSpeed",
                ua.NodeId.from_string(f"ns={idx};s=Spindle.Speed"),
                ua.VariantType.Double,
                True,
            ),
            (
                "Vibration",
                ua.NodeId.from_string(f"ns={idx};s=Vibration"),
                ua.VariantType.Double,
                False,
            ),
            ("Temperature", ua.NodeId.from_string(f"ns={idx};i=1001"), ua.VariantType.Float, False),
            ("Setpoint", ua.NodeId.from_string(f"ns={idx};i=1002"), ua.VariantType.Int32, True),
            ("Running", ua.NodeId.from_string(f"ns={idx};s=Running"), ua.VariantType.Boolean, True),
        ]
        for name, node_id, vtype, writable in specs:
            node = await machine.add_variable(
                node_id, ua.QualifiedName(name, idx), ua.Variant(self._values[name], vtype)
            )
            if writable:
                await node.set_writable()
            self._nodes[name] = node
        await server.start()
        self._server = server
        if self._live:
            self._live_task = asyncio.create_task(self._run_live(), name="simulator.opcua.live")

    async def stop(self) -> None:
        """Stop listening, keeping the node values for a later `start`."""
        if self._live_task is not None:
            self._live_task.cancel()
            await asyncio.gather(self._live_task, return_exceptions=True)
            self._live_task = None
        server, self._server = self._server, None
        if server is None:
            return
        for name, node in self._nodes.items():
            with contextlib.suppress(Exception):
                self._values[name] = await node.read_value()
        await server.stop()

    async def set(self, name: str, value: Any) -> None:
        """Set a node's value as the machine would (keeps the node's variant type)."""
        node = self._nodes[name]
        vtype = await node.read_data_type_as_variant_type()
        await node.write_value(ua.Variant(value, vtype))

    async def get(self, name: str) -> Any:
        """A node's current value."""
        return await self._nodes[name].read_value()

    async def _run_live(self) -> None:
        t = 0
        while True:
            setpoint = float(await self.get("Setpoint"))
            speed = float(await self.get("SpindleSpeed"))
            speed += (setpoint - speed) * 0.2 + self._rng.gauss(0, 2)
            await self.set("SpindleSpeed", speed)
            await self.set("Vibration", abs(self._rng.gauss(speed / 1000, 0.2)))
            await self.set("Temperature", 25 + 10 * math.sin(t / 50) + self._rng.gauss(0, 0.3))
            t += 1
            await asyncio.sleep(self._period)


logging.getLogger("asyncua").setLevel(logging.WARNING)
