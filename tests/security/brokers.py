"""Secured brokers for the security tests: amqtt and Mosquitto from ONE settings model.

Both are started from the same `MqttSecuritySettings` (one ``$7$`` password file, one
`AclPolicy`), so every test run against both proves the two renderings agree.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus import mqtt_wire as wire
from bus.acl import AclPolicy, app_rules, bridge_rules, mapper_rules, policy, twin_rules
from bus.broker import EmbeddedBroker
from bus.mqtt import DEFAULT_MAX_PACKET, MqttClient
from bus.mqtt_connection import ConnectRefused, open_connection
from bus.ports import free_port
from bus.security import (
    MqttSecuritySettings,
    MqttTlsSettings,
    client_tls_context,
    write_mosquitto_config,
    write_password_file,
)
from bus.url import parse_broker_url
from tests.conftest import _wait_port, require_mosquitto_tool
from tests.security.pki import make_pki

PASSWORDS = {
    "mapper-1": "mapper-secret",
    "twin": "twin-secret",
    "app": "app-secret",
    "operator": "operator-secret",
    "bridge": "bridge-secret",
}
MAPPER_DEVICES = ("plc-1",)


def site_policy() -> AclPolicy:
    """The site's ACL: one mapper for plc-1, the twin, a read-only app, an operator, the bridge."""
    return policy(
        {
            "mapper-1": mapper_rules(MAPPER_DEVICES),
            "twin": twin_rules(),
            "app": app_rules("app"),
            "operator": app_rules("operator", twin_write=True),
            "bridge": bridge_rules(),
        }
    )


@dataclass(frozen=True)
class SecureBroker:
    """A running secured broker and how to log in to it."""

    kind: str
    url: str
    ca_file: Path | None

    def client(
        self,
        username: str | None,
        password: str | None = None,
        *,
        trust_ca: bool = True,
        connect_timeout: float = 5.0,
    ) -> MqttClient:
        """A client logging in as `username` (its real password unless `password` is given)."""
        if password is None and username is not None:
            password = PASSWORDS[username]
        tls = client_tls_context(self.ca_file) if self.ca_file and trust_ca else None
        return MqttClient(
            self.url,
            client_id=f"{username or 'anon'}-{time.monotonic_ns()}",
            username=username,
            password=password,
            tls_context=tls,
            protocol="3.1.1" if self.kind == "amqtt" else "5",
            connect_timeout=connect_timeout,
            backoff_max=0.5,
        )


def mosquitto_binary() -> str:
    """Mosquitto's path; skipped locally when missing, a failure in CI."""
    return require_mosquitto_tool()


@contextlib.contextmanager
def run_mosquitto(conf: Path, port: int) -> Iterator[None]:
    """Mosquitto with `conf`, killed on exit; its log goes next to the config."""
    log_path = conf.with_suffix(".log")
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed binary, our own config
            [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        try:
            _wait_port(port)
        except TimeoutError:
            pytest.fail(f"mosquitto did not start: {log_path.read_text(errors='replace')}")
        yield
    finally:
        process.kill()
        process.wait(timeout=10)


def settings_for(tmp_path: Path, *, tls: bool, acl: bool = True) -> MqttSecuritySettings:
    """Security settings with the test users, the site ACL and optionally a test CA."""
    pki = make_pki(tmp_path / "pki") if tls else None
    return MqttSecuritySettings(
        password_file=write_password_file(tmp_path / "passwd", PASSWORDS, iterations=1000),
        acl=site_policy() if acl else None,
        tls=MqttTlsSettings(certfile=pki.certfile, keyfile=pki.keyfile) if pki else None,
        ca_file=pki.ca_file if pki else None,
    )


@contextlib.asynccontextmanager
async def secure_broker(
    kind: str, tmp_path: Path, *, tls: bool = False, acl: bool = True
) -> AsyncIterator[SecureBroker]:
    """Start `kind` ("amqtt" or "mosquitto") secured by the same settings model."""
    security = settings_for(tmp_path, tls=tls, acl=acl)
    port = free_port()
    scheme = "mqtts" if tls else "mqtt"
    if kind == "amqtt":
        async with EmbeddedBroker(port=port, security=security) as broker:
            yield SecureBroker(kind, broker.url, security.ca_file)
        return
    conf = write_mosquitto_config(
        tmp_path / "mosquitto",
        host="127.0.0.1",
        port=port,
        security=security,
        run_as="root" if os.geteuid() == 0 else None,
    )
    with run_mosquitto(conf, port):
        yield SecureBroker(kind, f"{scheme}://127.0.0.1:{port}", security.ca_file)


async def login_once(
    url: str,
    username: str | None,
    password: str | None,
    *,
    tls_context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> bool:
    """ONE MQTT 3.1.1 login attempt (no reconnect loop): True when the broker accepts it.

    `MqttClient` retries until its timeout, so a count of refused logins would depend on
    timing; the throttling tests need exactly one attempt per call.
    """
    address = parse_broker_url(url)
    conn = await open_connection(
        address.host,
        address.port,
        version=wire.V311,
        on_publish=lambda _conn, _packet: None,
        max_packet=DEFAULT_MAX_PACKET,
        ssl_context=tls_context if address.tls else None,
        timeout=timeout,
    )
    packet = wire.connect(
        client_id=f"login-{time.monotonic_ns()}",
        version=wire.V311,
        clean=True,
        keepalive=15,
        username=username,
        password=password,
        properties={},
    )
    try:
        await conn.handshake(packet, timeout)
    except ConnectRefused:
        return False
    finally:
        conn.abort(None)
    return True
