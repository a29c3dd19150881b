"""The leaf link with TLS (a CA made at test time) and per-edge credentials."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from bus.nats_server import HubSpec, LeafSpec, LeafUser, NatsServer
from bus.ports import free_port
from cloud_bridge.downlink import MODEL, CloudPublisher
from cloud_bridge.settings import DOWNLINK_STREAM
from schemas import topics
from schemas.topics import TrafficClass
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
        leaf_users=(
            LeafUser("edge-1", "s3cret:/@", "edge-1"),
            LeafUser("edge-2", "other", "edge-2"),
        ),
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


@pytest.mark.parametrize("case", ["wrong-password", "no-ca", "no-credentials"])
async def test_leaf_with_a_wrong_password_or_without_tls_is_refused(
    secure_rig: Rig, case: str
) -> None:
    rig = secure_rig
    hub_spec = rig.hub.spec
    assert isinstance(hub_spec, HubSpec)
    ca = None if case == "no-ca" else Path(str(rig.tmp_path / "pki" / "ca.pem"))
    password = "nope" if case == "wrong-password" else "other"
    spec = _leaf(rig.tmp_path, hub_spec, "edge-2", password, ca)
    if case == "no-credentials":  # the hub's no_auth_user is for cloud clients, not leaves
        spec = dataclasses.replace(spec, hub_user=None, hub_password=None)
    async with NatsServer(spec) as intruder:
        marker = "TLS Handshake Failure" if case == "no-ca" else "Authorization Violation"
        await wait_for(
            lambda: marker in intruder.log_path.read_text(), timeout=15, what=f"{case} refused"
        )
        assert await rig.hub.leaf_connections() == 1  # only the rightful edge-1


async def test_an_edge_leaf_sees_and_sends_only_its_own_subjects(secure_rig: Rig) -> None:
    """Per-edge permissions on the hub: edge-1's leaf cannot read or forge edge-2's traffic.

    Each negative check is followed on the same connection by a permitted message: the leaf
    link keeps order, so once the permitted one has arrived the forbidden one would have too.
    """
    rig = secure_rig
    at_edge: list[str] = []
    at_hub: list[str] = []
    hub = await nats.connect(rig.hub.url)
    edge = await nats.connect(rig.leaf.url, inbox_prefix="_INBOX.edge-1")
    try:
        await edge.subscribe("ef.>", cb=_keep(at_edge))
        await hub.subscribe("ef.up.>", cb=_keep(at_hub))
        # Interest crosses the link asynchronously: repeat the permitted message until seen.
        await _until_seen(hub, "ef.down.edge-1.model.ping", at_edge)
        for subject in ("ef.up.edge-2.results.x", "ef.down.edge-2.model.m", "ef.up.edge-1.x"):
            await hub.publish(subject, b"")
        await _until_seen(hub, "ef.down.all.model.last", at_edge)
        assert set(at_edge) == {"ef.down.edge-1.model.ping", "ef.down.all.model.last"}
        await _until_seen(edge, "ef.up.edge-1.results.first", at_hub)
        await edge.publish("ef.up.edge-2.results.forged", b"")
        await _until_seen(edge, "ef.up.edge-1.results.own", at_hub)
        assert "ef.up.edge-2.results.forged" not in at_hub
    finally:
        await edge.close()
        await hub.close()


def _keep(into: list[str]) -> Callable[[Msg], Awaitable[None]]:
    async def cb(msg: Msg) -> None:
        into.append(msg.subject)

    return cb


async def _until_seen(nc: NatsClient, subject: str, seen: list[str]) -> None:
    async with asyncio.timeout(10):
        while subject not in seen:
            await nc.publish(subject, b"")
            await nc.flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    while subject not in seen:  # noqa: ASYNC110 - filled by a callback
                        await asyncio.sleep(0.01)


async def test_a_confined_edge_bridge_forwards_and_receives_its_downlink(secure_rig: Rig) -> None:
    """The uplink flows at once; the downlink as soon as the cloud provisions the consumer."""
    rig = secure_rig
    async with (
        CloudPublisher(rig.hub.url) as cloud,
        bridge_for(rig) as bridge,
        Collector(rig.hub.url) as collector,
    ):
        await cloud.publish(rig.edge_id, MODEL, "detector", payload=b"v1")
        await cloud.publish("edge-2", MODEL, "other", payload=b"not for edge-1")
        await publish_numbered(rig.broker_url, 0, 20)
        downlink = bridge.downlink
        assert downlink is not None
        await wait_for(lambda: len(collector.got) >= 20, timeout=30, what="uplink")
        assert downlink.delivered == 0  # the edge could not create its consumer itself
        await cloud.provision(rig.edge_id)
        await wait_for(lambda: downlink.delivered >= 1, timeout=30, what="downlink")
    assert_exactly(collector.got, 20)
    assert {m.traffic_class for m in collector.got} == {TrafficClass.RESULTS}
    assert downlink.delivered == 1


def _hijack(form: str) -> ConsumerConfig:
    """edge-1's consumer name with edge-2's filter, in each way nats-py can ask for it."""
    theirs = topics.downlink_filters("edge-2")[0]
    if form == "name+filter":  # extended subject CONSUMER.CREATE.EF_DOWN.<name>.<filter>
        return ConsumerConfig(name="ef-down-edge-1", filter_subject=theirs)
    if form == "name+filters":  # CONSUMER.CREATE.EF_DOWN.<name>, filters in the body
        return ConsumerConfig(name="ef-down-edge-1", filter_subjects=[theirs])
    if form == "durable":  # legacy CONSUMER.DURABLE.CREATE.EF_DOWN.<durable>
        return ConsumerConfig(durable_name="ef-down-edge-1", filter_subject=theirs)
    return ConsumerConfig(filter_subject=theirs)  # ephemeral: CONSUMER.CREATE.EF_DOWN


async def test_a_confined_edge_cannot_point_its_downlink_consumer_at_another_edge(
    secure_rig: Rig,
) -> None:
    """The consumer's filter is in the request body, which permissions never see: so a
    confined edge may not create consumers at all, and reads only what the cloud provisioned."""
    rig = secure_rig
    async with CloudPublisher(rig.hub.url) as cloud:
        await cloud.provision(rig.edge_id)
        await cloud.publish("edge-2", MODEL, "other", payload=b"not for edge-1")
        await cloud.publish(rig.edge_id, MODEL, "own", payload=b"for edge-1")
    hub = await nats.connect(rig.hub.url)
    edge = await nats.connect(rig.leaf.url, inbox_prefix="_INBOX.edge-1")
    try:
        js = edge.jetstream(domain="cloud", timeout=2)
        forms = ("name+filter", "name+filters", "durable", "ephemeral")
        refused = await asyncio.gather(
            *(js.add_consumer(DOWNLINK_STREAM, _hijack(f)) for f in forms), return_exceptions=True
        )
        assert all(isinstance(r, nats.errors.Error) for r in refused), refused  # none created
        consumers = await hub.jetstream().consumers_info(DOWNLINK_STREAM)
        assert [(c.name, c.config.filter_subjects) for c in consumers] == [
            ("ef-down-edge-1", list(topics.downlink_filters(rig.edge_id)))
        ]
        psub = await js.pull_subscribe_bind("ef-down-edge-1", stream=DOWNLINK_STREAM)
        got = await psub.fetch(10, timeout=5)
        assert [m.subject for m in got] == [topics.downlink(rig.edge_id, MODEL, "own")]
    finally:
        await edge.close()
        await hub.close()
