"""The edge composes MQTT security: its services log in, strangers cannot."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from bus.acl import policy, twin_rules
from bus.errors import NotConnected
from bus.ports import free_port
from bus.security import MqttCredentials, MqttSecuritySettings, MqttTlsSettings
from edgefabric.config import BridgeConfig, BrokerSettings, EdgeConfig, LeafSettings
from edgefabric.edge import Edge
from tests.security.brokers import SecureBroker, settings_for
from tests.security.pki import make_pki


async def test_edge_services_log_in_over_tls_and_strangers_are_refused(tmp_path: Path) -> None:
    base = settings_for(tmp_path, tls=False, acl=False)
    pki = make_pki(tmp_path / "pki")
    security = MqttSecuritySettings(
        password_file=base.password_file,
        acl=policy({"twin": twin_rules()}),
        tls=MqttTlsSettings(certfile=pki.certfile, keyfile=pki.keyfile),
        ca_file=pki.ca_file,
        clients={"twin": MqttCredentials(username="twin", password=SecretStr("twin-secret"))},
    )
    config = EdgeConfig(
        edge_id="edge-sec",
        data_dir=tmp_path / "edge",
        broker=BrokerSettings(port=free_port(), security=security),
        leaf=LeafSettings(run=False),
        bridge=BridgeConfig(enabled=False),
    )
    assert config.broker.client_url.startswith("mqtts://127.0.0.1:")
    async with Edge(config) as edge:
        assert edge.twin is not None  # it connected with its credentials, over TLS
        broker = SecureBroker("amqtt", config.broker.client_url, pki.ca_file)
        async with broker.client("twin") as peer:
            assert peer.protocol_version == "3.1.1"
        with pytest.raises(NotConnected):
            async with broker.client(None, connect_timeout=1.0):
                pass
