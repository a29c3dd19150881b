"""The leaf link with TLS (a CA made at test time) and per-edge credentials."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bus.nats_server import HubSpec, LeafSpec, NatsServer
from bus.ports import free_port
from tests.bridge.conftest import Rig
from tests.bridge.harness import Collector, assert_exactly, bridge_for, publish_numbered
from tests.bridge.proxy import BlackHoleProxy
from tests.support import wait_for


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(directory: Path) -> Pki:
    """A CA and a server certificate for 127.0.0.1, valid for a day."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("edgefabric test CA"))
        .issuer_name(_name("edgefabric test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("hub"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory / "ca.pem", directory / "hub.pem", directory / "hub-key.pem")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


@pytest.fixture
async def secure_rig(tmp_path: Path, mosquitto_url: str) -> AsyncIterator[Rig]:
    pki = make_pki(tmp_path / "pki")
    hub_spec = HubSpec(
        name="hub",
        port=free_port(),
        leafnode_port=free_port(),
        monitor_port=free_port(),
        store_dir=tmp_path / "hub" / "js",
        leaf_tls_cert=pki.cert,
        leaf_tls_key=pki.key,
        leaf_users=(("edge-1", "s3cret:/@"), ("edge-2", "other")),
    )
    leaf = NatsServer(_leaf(tmp_path, hub_spec, "edge-1", "s3cret:/@", pki.ca))
    async with BlackHoleProxy(port=free_port(), target_host="127.0.0.1", target_port=1) as proxy:
        async with NatsServer(hub_spec) as hub, leaf:
            await hub.wait_leaf_connected(timeout=15)
            yield Rig(hub, leaf, proxy, mosquitto_url, "edge-1", tmp_path)


def _leaf(tmp: Path, hub: HubSpec, edge: str, password: str, ca: Path | None) -> LeafSpec:
    return LeafSpec(
        edge_id=edge,
        port=free_port(),
        monitor_port=free_port(),
        store_dir=tmp / edge / "js",
        hub_leaf_urls=(f"nats-leaf://127.0.0.1:{hub.leafnode_port}",),
        hub_user=edge,
        hub_password=password,
        hub_ca_file=ca,
    )


async def test_bridge_forwards_over_a_tls_leaf_link_with_credentials(secure_rig: Rig) -> None:
    rig = secure_rig
    async with bridge_for(rig) as bridge, Collector(rig.hub.url) as cloud:
        await publish_numbered(rig.broker_url, 0, 200)
        await wait_for(lambda: len(cloud.got) >= 200, timeout=30, what="all delivered")
        assert bridge.forwarded == 200
    assert_exactly(cloud.got, 200)
    spec = rig.hub.spec
    assert isinstance(spec, HubSpec)
    reader, writer = await asyncio.open_connection("127.0.0.1", spec.leafnode_port)
    try:
        async with asyncio.timeout(5):
            info = json.loads((await reader.readline()).removeprefix(b"INFO "))
    finally:
        writer.close()
    assert info["tls_required"] is True
    assert info["auth_required"] is True


@pytest.mark.parametrize("case", ["wrong-password", "no-ca"])
async def test_leaf_with_a_wrong_password_or_without_tls_is_refused(
    secure_rig: Rig, case: str
) -> None:
    rig = secure_rig
    hub_spec = rig.hub.spec
    assert isinstance(hub_spec, HubSpec)
    ca = None if case == "no-ca" else Path(str(rig.tmp_path / "pki" / "ca.pem"))
    password = "nope" if case == "wrong-password" else "other"
    async with NatsServer(_leaf(rig.tmp_path, hub_spec, "edge-2", password, ca)) as intruder:
        marker = "Authorization Violation" if case == "wrong-password" else "TLS Handshake Failure"
        await wait_for(
            lambda: marker in intruder.log_path.read_text(), timeout=15, what=f"{case} refused"
        )
        assert await rig.hub.leaf_connections() == 1  # only the rightful edge-1
