"""Configs fail at start-up naming the field; the CLI runs the demo and writes its summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgefabric.cli import main
from edgefabric.config import CloudConfig, EdgeConfig, load_config
from edgefabric.errors import ConfigError


def test_a_valid_edge_config_loads(tmp_path: Path):
    path = tmp_path / "edge.yaml"
    path.write_text("edge_id: site-1\nbroker:\n  port: 1999\n")
    config = load_config(EdgeConfig, path)
    assert config.edge_id == "site-1"
    assert config.broker.client_url == "mqtt://127.0.0.1:1999"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("edge_id: site-1\nbroker:\n  port: 0\n", "broker.port"),
        ("edge_id: 'a/b'\n", "edge_id"),
        ("edge_id: s\nbroker:\n  embedded: false\n", "broker"),
        ("edge_id: s\nbroker:\n  url: http://x\n", "broker"),
        ("edge_id: s\nbrokr: {}\n", "brokr"),
        ("broker: {}\n", "edge_id"),
        ("edge_id: s\nbridge:\n  max_payload_bytes: 100000000\n", "bridge.max_payload_bytes"),
    ],
)
def test_an_invalid_edge_config_fails_naming_the_field(tmp_path: Path, text: str, field: str):
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(EdgeConfig, path)


def test_cli_reports_a_bad_config_on_stderr_with_exit_code_2(tmp_path: Path, capsys):
    path = tmp_path / "cloud.yaml"
    path.write_text("hub:\n  port: -1\n")
    assert main(["cloud", "--config", str(path)]) == 2
    assert "hub.port" in capsys.readouterr().err


def test_cloud_config_defaults_are_valid():
    assert CloudConfig().hub.url == "nats://127.0.0.1:4222"


def test_the_example_configs_in_the_repo_are_valid():
    root = Path(__file__).resolve().parent.parent / "examples"
    assert load_config(EdgeConfig, root / "edge.yaml").edge_id
    assert load_config(CloudConfig, root / "cloud.yaml").hub.port


def test_demo_runs_for_a_duration_and_writes_nonzero_counts(tmp_path: Path):
    out = tmp_path / "summary.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgefabric.cli",
            "demo",
            "--duration",
            "15",
            "--summary-json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["readings"] > 0
    assert summary["results"] > 0
    assert summary["forwarded_to_cloud"] > 0
    # The acts: a desired value reached the PLC and came back; an outage lost nothing.
    assert summary["acts"]["twin_write"]["reported"] == summary["acts"]["twin_write"]["desired"]
    assert summary["acts"]["outage"]["results_during_outage"] > 0
    assert summary["acts"]["joint_inference"]["accuracy"] > 0.9
    hostile = summary["acts"]["hostile_input"]
    assert hostile["dead_lettered"] == hostile["sent"] == 3, hostile
    assert [r["status"] for r in summary["acts"]["federated"]["rounds"]] == ["completed"] * 3
    assert summary["acts"]["model_update"] == {
        "refused_unsigned": "rejected",
        "swapped_to": "2",
        "rolled_back_to": "1",
        "new_accuracy": pytest.approx(0.98, abs=0.02),
    }
    assert summary["results_not_in_cloud"] == 0
    assert summary["cloud_duplicates"] == 0
