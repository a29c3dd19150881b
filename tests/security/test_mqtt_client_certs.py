"""Mutual TLS: with `client_ca_file` set, a broker admits only clients presenting a certificate
signed by that CA, and the certificate's common name is the identity the ACL sees.

Run against both brokers from one settings model: Mosquitto (``require_certificate``,
``use_identity_as_username``) and the embedded amqtt (listener ``cafile`` +
`ClientCertAuthPlugin`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from bus.broker import EmbeddedBroker
from bus.errors import NotConnected
from bus.mqtt import MqttClient
from bus.ports import free_port
from bus.security import (
    MqttCredentials,
    MqttSecuritySettings,
    MqttTlsSettings,
    client_tls_context,
    write_mosquitto_config,
    write_password_file,
)
from bus.subscription import Subscription
from schemas import topics
from tests.security.brokers import PASSWORDS, run_mosquitto, site_policy
from tests.security.pki import ClientPki, make_client_pki, make_pki
from tests.support import wait_for


@dataclass(frozen=True)
class MtlsBroker:
    """A running broker that requires client certificates, and the certificates to use."""

    kind: str
    url: str
    server_ca: Path
    clients: ClientPki
    strangers: ClientPki  # same common names, signed by another CA

    def client(self, pki: ClientPki | None, name: str = "mapper-1") -> MqttClient:
        """A client presenting `name`'s certificate from `pki` (None: no certificate)."""
        cert, key = pki.certs[name] if pki is not None else (None, None)
        return MqttClient(
            self.url,
            client_id=f"{name}-{time.monotonic_ns()}",
            tls_context=client_tls_context(self.server_ca, certfile=cert, keyfile=key),
            protocol="3.1.1" if self.kind == "amqtt" else "5",
            connect_timeout=1.5 if pki is not self.clients else 5.0,
            backoff_max=0.5,
        )


@pytest.fixture(params=["amqtt", "mosquitto"])
async def mtls(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MtlsBroker]:
    """A broker (each kind) with TLS, the site ACL and client certificates required."""
    server = make_pki(tmp_path / "server")
    names = ("mapper-1", "twin")
    clients = make_client_pki(tmp_path / "clients", names)
    strangers = make_client_pki(tmp_path / "strangers", names, ca_name="another CA")
    security = MqttSecuritySettings(
        password_file=write_password_file(tmp_path / "passwd", PASSWORDS, iterations=1000),
        acl=site_policy(),
        tls=MqttTlsSettings(certfile=server.certfile, keyfile=server.keyfile),
        ca_file=server.ca_file,
        client_ca_file=clients.ca_file,
    )
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "amqtt":
            await stack.enter_async_context(EmbeddedBroker(port=port, security=security))
        else:
            conf = write_mosquitto_config(
                tmp_path / "mosquitto",
                host="127.0.0.1",
                port=port,
                security=security,
                run_as="root" if os.geteuid() == 0 else None,
            )
            stack.enter_context(run_mosquitto(conf, port))
        yield MtlsBroker(
            request.param, f"mqtts://127.0.0.1:{port}", server.ca_file, clients, strangers
        )


async def _collect(sub: Subscription, into: list[tuple[str, bytes]]) -> None:
    async for message in sub:
        into.append((message.topic, message.payload))


async def test_a_certificate_from_the_ca_logs_in_as_its_common_name(mtls: MtlsBroker) -> None:
    """mapper-1 (by certificate alone) publishes its own device's reading; the ACL drops
    another device's reading, which it would not if the identity were anything else."""
    seen: list[tuple[str, bytes]] = []
    genuine = topics.reading("plc-1", "t")
    async with (
        mtls.client(mtls.clients, "twin") as twin,
        mtls.client(mtls.clients, "mapper-1") as mapper,
        twin.subscribe(topics.readings_filter()) as sub,
        asyncio.TaskGroup() as tg,
    ):
        task = tg.create_task(_collect(sub, seen))
        with contextlib.suppress(NotConnected):  # v5 Mosquitto refuses it outright
            await mapper.publish(topics.reading("plc-2", "t"), b"forged")
        await mapper.publish(genuine, b"genuine")
        await wait_for(lambda: (genuine, b"genuine") in seen)
        task.cancel()
    assert seen == [(genuine, b"genuine")]


async def test_a_service_presents_the_certificate_its_credentials_name(mtls: MtlsBroker) -> None:
    """What the edge does: `client_tls_context(service)` loads that service's certificate."""
    cert, key = mtls.clients.certs["twin"]
    security = MqttSecuritySettings(
        ca_file=mtls.server_ca,
        clients={
            "twin": MqttCredentials(
                username="twin",
                password=SecretStr("unused"),
                certificate=MqttTlsSettings(certfile=cert, keyfile=key),
            )
        },
    )
    client = MqttClient(
        mtls.url,
        client_id=f"twin-{time.monotonic_ns()}",
        tls_context=security.client_tls_context("twin"),
        protocol="3.1.1" if mtls.kind == "amqtt" else "5",
    )
    async with client, client.subscribe(topics.readings_filter()):
        pass  # connected by certificate alone (amqtt also checks the ACL here)


async def test_a_client_without_a_certificate_is_refused(mtls: MtlsBroker) -> None:
    with pytest.raises(NotConnected):
        async with mtls.client(None):
            pass


async def test_a_password_does_not_replace_the_certificate(mtls: MtlsBroker) -> None:
    client = MqttClient(
        mtls.url,
        client_id=f"pw-{time.monotonic_ns()}",
        username="mapper-1",
        password=PASSWORDS["mapper-1"],
        tls_context=client_tls_context(mtls.server_ca),
        protocol="3.1.1" if mtls.kind == "amqtt" else "5",
        connect_timeout=1.5,
        backoff_max=0.5,
    )
    with pytest.raises(NotConnected):
        async with client:
            pass


async def test_a_certificate_from_another_ca_is_refused(mtls: MtlsBroker) -> None:
    with pytest.raises(NotConnected):
        async with mtls.client(mtls.strangers):
            pass


def test_client_certificates_need_tls(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="client_ca_file"):
        MqttSecuritySettings(client_ca_file=tmp_path / "ca.pem")


def test_mosquitto_config_requires_certificates_and_uses_their_identity(tmp_path: Path) -> None:
    server = make_pki(tmp_path / "server")
    security = MqttSecuritySettings(
        tls=MqttTlsSettings(certfile=server.certfile, keyfile=server.keyfile),
        client_ca_file=server.ca_file,
    )
    assert security.authenticated
    conf = write_mosquitto_config(tmp_path, host="127.0.0.1", port=8883, security=security)
    lines = conf.read_text().splitlines()
    for line in (
        f"cafile {server.ca_file}",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
    ):
        assert line in lines
