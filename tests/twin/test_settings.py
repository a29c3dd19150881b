"""The twin's settings in the edge config, and the KubeEdge adapter's broker requirement."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from bus.mqtt import MqttClient
from edgefabric.config import EdgeConfig, load_config
from edgefabric.edge import Edge
from edgefabric.errors import ConfigError
from twin.errors import DollarTopicsRefused
from twin.service import TwinService
from twin.settings import TwinSettings


def test_edge_config_refuses_kubeedge_on_the_embedded_broker_naming_the_field(
    tmp_path: Path,
) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("edge_id: e1\ntwin:\n  kubeedge: true\n")
    with pytest.raises(ConfigError, match=r"twin\.kubeedge: .*amqtt refuses '\$' topics"):
        load_config(EdgeConfig, path)


def test_edge_config_accepts_kubeedge_with_an_external_broker_and_reads_the_twin_section(
    tmp_path: Path,
) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(
        "edge_id: e1\nbroker:\n  embedded: false\n  url: mqtt://127.0.0.1:1883\n"
        "twin:\n  kubeedge: true\n  write_timeout_s: 0.5\n  db_file: plant.db\n"
    )
    config = load_config(EdgeConfig, path)
    assert config.twin == TwinSettings(kubeedge=True, write_timeout_s=0.5, db_file="plant.db")


@pytest.mark.parametrize("name", ["", "../twin.db", "/tmp/twin.db", "..", "a\\b.db"])
def test_twin_db_file_must_be_a_plain_file_name(name: str) -> None:
    with pytest.raises(ValidationError, match="db_file"):
        TwinSettings(db_file=name)


def test_old_twin_enabled_key_is_refused_rather_than_ignored(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("edge_id: e1\ntwin_enabled: false\n")
    with pytest.raises(ConfigError, match="twin_enabled"):
        load_config(EdgeConfig, path)


async def test_kubeedge_adapter_refuses_to_start_on_a_broker_that_drops_dollar_topics(
    amqtt_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with MqttClient(amqtt_url, client_id="twin", protocol="3.1.1") as bus:
        with pytest.raises(DollarTopicsRefused, match=r"twin\.kubeedge"):
            async with TwinService(bus=bus, db_path=tmp_path / "twin.db", kubeedge=True):
                pass
    assert time.monotonic() - started < 8, "refused promptly, not stalled"


async def test_edge_runs_the_twin_with_its_settings(mosquitto_url: str, tmp_path: Path) -> None:
    config = EdgeConfig.model_validate(
        {
            "edge_id": "e1",
            "data_dir": str(tmp_path),
            "broker": {"embedded": False, "url": mosquitto_url},
            "bridge": {"enabled": False},
            "twin": {"kubeedge": True, "db_file": "plant.db", "write_timeout_s": 0.5},
        }
    )
    async with Edge(config) as edge:
        assert edge.twin is not None
        assert edge.twin.kubeedge is not None
        assert edge.twin.writes.timeout == 0.5
    assert (tmp_path / "plant.db").exists()


async def test_edge_without_the_twin_runs_no_twin(mosquitto_url: str, tmp_path: Path) -> None:
    config = EdgeConfig.model_validate(
        {
            "edge_id": "e1",
            "data_dir": str(tmp_path),
            "broker": {"embedded": False, "url": mosquitto_url},
            "bridge": {"enabled": False},
            "twin": {"enabled": False},
        }
    )
    async with Edge(config) as edge:
        assert edge.twin is None
    assert not (tmp_path / "twin.db").exists()
