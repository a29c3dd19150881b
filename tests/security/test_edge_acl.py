"""One call (`edge_policy`) gives every edge service exactly the topics it needs, on both
brokers: the edge serves, refuses hostile input into its dead letters, and a read-only app
cannot reach past its grant."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from bus.acl import EDGE_SERVICES, Access, AclRule, app_rules, edge_policy, policy
from bus.mqtt import MqttClient
from bus.ports import free_port
from bus.security import (
    MqttCredentials,
    MqttSecuritySettings,
    write_mosquitto_config,
    write_password_file,
)
from edgefabric.config import BridgeConfig, BrokerSettings, EdgeConfig, LeafSettings
from edgefabric.edge import Edge
from pipelines.hem import HemSettings
from pipelines.offload_client import OffloadClient
from pipelines.offload_settings import OffloadModelSettings, OffloadSettings
from pipelines.settings import PipelinesSettings
from schemas import topics
from schemas.codec import decode
from schemas.status import DeadLetter
from tests.conftest import require_mosquitto_tool
from tests.security.brokers import run_mosquitto
from tests.support import collect, wait_for

USERS = (*EDGE_SERVICES, "observer", "app")


def _security(tmp_path: Path) -> MqttSecuritySettings:
    acl = edge_policy(["plc-1"]).merged(
        policy(
            {
                "observer": [AclRule(access=Access.READ, topic="ef/#")],
                "app": app_rules("app"),
            }
        )
    )
    return MqttSecuritySettings(
        password_file=write_password_file(
            tmp_path / "passwd", {u: f"{u}-pw" for u in USERS}, iterations=1000
        ),
        acl=acl,
        clients={
            s: MqttCredentials(username=s, password=SecretStr(f"{s}-pw")) for s in EDGE_SERVICES
        },
    )


@contextlib.asynccontextmanager
async def _edge(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """An edge whose services log in with their own users under `edge_policy`; its URL."""
    security = _security(tmp_path)
    port = free_port()
    if kind == "amqtt":
        broker = BrokerSettings(port=port, security=security)
        running: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    else:
        require_mosquitto_tool()
        conf = write_mosquitto_config(
            tmp_path / "mosquitto", host="127.0.0.1", port=port, security=security,
            run_as="root" if os.geteuid() == 0 else None,
        )  # fmt: skip
        broker = BrokerSettings(embedded=False, url=f"mqtt://127.0.0.1:{port}", security=security)
        running = run_mosquitto(conf, port)
    config = EdgeConfig(
        edge_id="edge-acl",
        data_dir=tmp_path / "edge",
        broker=broker,
        leaf=LeafSettings(run=False),
        bridge=BridgeConfig(enabled=False),
        pipelines=PipelinesSettings(
            offload=OffloadSettings(
                models=[OffloadModelSettings(cloud_model=None, hem=HemSettings(method="EdgeOnly"))]
            )
        ),
    )
    with running:
        async with Edge(config) as edge:
            assert edge.offload is not None and edge.models is not None
            yield broker.client_url


def _client(url: str, user: str) -> MqttClient:
    return MqttClient(url, client_id=f"{user}-test", username=user, password=f"{user}-pw")


@pytest.mark.parametrize("kind", ["amqtt", "mosquitto"])
async def test_edge_services_under_edge_policy_serve_and_dead_letter(
    kind: str, tmp_path: Path
) -> None:
    async with (
        _edge(kind, tmp_path) as url,
        _client(url, "observer") as observer,
        collect(observer, topics.dead_letter_filter()) as letters,
        _client(url, "app") as app,
        _client(url, "bridge") as bridge,
        OffloadClient(app, name="app") as phone,
    ):
        answer = await phone.infer("digits", np.zeros((8, 8), dtype=np.uint8))
        assert answer.error is None and answer.label is not None
        await app.publish(topics.infer_request("digits"), b"garbage")
        await bridge.publish(topics.model_update("digits-edge"), b"not a frame")
        await wait_for(
            lambda: (
                {m.topic for m in letters.messages}
                >= {topics.dead_letter("offload"), topics.dead_letter("models")}
            ),
            what="offload and models dead letters allowed by their ACLs",
        )
        assert all(decode(DeadLetter, m.payload).reason for m in letters.messages)
        # The read-only app may not send what only the bridge may: a model update.
        with contextlib.suppress(Exception):  # 3.1.1 drops it silently, v5 refuses it
            await app.publish(topics.model_update("digits-edge"), b"forged by an app")
        await bridge.publish(topics.model_update("digits-edge"), b"marker")
        await wait_for(
            lambda: any(b"marker" in m.payload for m in letters.messages),
            what="the bridge's marker dead-lettered after the app's attempt",
        )
        forged = [m for m in letters.messages if b"forged" in m.payload]
        assert not forged, "an app's model update reached the model updater"
