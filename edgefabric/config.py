"""The edge and cloud configs, composed from each service's settings model.

Only the entry point reads files and the environment; services get these frozen models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self, TypeVar
from urllib.parse import quote

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aggregator.settings import LearningSettings
from bus.nats_server import CLOUD_USER
from bus.security import MqttSecuritySettings
from bus.url import parse_broker_url
from cloud_bridge.settings import CloudStreamSettings
from edgefabric.errors import ConfigError
from pipelines.cloud_inference import CloudInferenceSettings
from pipelines.settings import PipelinesSettings
from schemas.base import Name
from twin.settings import KUBEEDGE_FIELD, TwinSettings


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BrokerSettings(_Frozen):
    """The local MQTT broker: embedded amqtt (default) or an external one such as Mosquitto."""

    embedded: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    url: str | None = Field(default=None, description="external broker, mqtt://host:port")
    security: MqttSecuritySettings = MqttSecuritySettings()

    @model_validator(mode="after")
    def _check_url(self) -> Self:
        if self.url is not None:
            parse_broker_url(self.url)
        elif not self.embedded:
            raise ValueError("url is required when embedded is false")
        return self

    @property
    def client_url(self) -> str:
        """Where services connect."""
        scheme = "mqtts" if self.security.tls is not None else "mqtt"
        return self.url or f"{scheme}://{self.host}:{self.port}"


class LeafSettings(_Frozen):
    """The edge's leaf nats-server, which connects out to the hub."""

    run: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=4222, ge=1, le=65535)
    monitor_port: int = Field(default=8222, ge=1, le=65535)
    hub_leaf_urls: list[str] = Field(
        default_factory=lambda: ["nats-leaf://127.0.0.1:7422"], min_length=1
    )
    sync_interval: str = "2m"
    hub_user: str | None = Field(default=None, description="this edge's leaf login at the hub")
    hub_password: str | None = Field(default=None, repr=False)
    hub_ca_file: Path | None = Field(default=None, description="CA that signed the hub's cert")

    @model_validator(mode="after")
    def _credentials_come_in_pairs(self) -> Self:
        if (self.hub_user is None) != (self.hub_password is None):
            raise ValueError("hub_user and hub_password go together")
        return self

    @property
    def url(self) -> str:
        """Client URL of the leaf."""
        return f"nats://{self.host}:{self.port}"


class BridgeConfig(_Frozen):
    """Bridge knobs in the edge config (the edge id and leaf URL come from the edge)."""

    enabled: bool = True
    max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    batch: int = Field(default=512, ge=1, le=10_000)
    max_payload_bytes: int = Field(
        default=16 << 20, ge=1024, le=64 << 20, description="bigger uplink payloads are refused"
    )


class EdgeConfig(_Frozen):
    """Everything one edge node runs."""

    edge_id: Name
    data_dir: Path = Path("var/edge")
    broker: BrokerSettings = BrokerSettings()
    leaf: LeafSettings = LeafSettings()
    devices: list[Path] = Field(default_factory=list, description="device files")
    pipelines: PipelinesSettings = PipelinesSettings()
    bridge: BridgeConfig = BridgeConfig()
    twin: TwinSettings = TwinSettings()

    @model_validator(mode="after")
    def _kubeedge_needs_dollar_topics(self) -> Self:
        # amqtt refuses client publishes to '$' topics (MQTT-4.7.2-1): KubeEdge apps would wait
        # forever on $hw/events/device/..., so refuse the combination here, by field name.
        if self.twin.enabled and self.twin.kubeedge and self.broker.url is None:
            raise ValueError(
                f"{KUBEEDGE_FIELD}: the KubeEdge adapter needs a broker that accepts '$hw/...' "
                "topics from clients, and the embedded amqtt refuses '$' topics; set broker.url "
                f"to a Mosquitto (broker.embedded: false) or {KUBEEDGE_FIELD}: false"
            )
        return self


class LeafUserSettings(_Frozen):
    """One edge's leaf login at the hub; `edge` confines it to that edge's subjects."""

    user: Name
    password: str = Field(min_length=8, repr=False)
    edge: Name | None = None


class HubSettings(_Frozen):
    """The cloud hub nats-server."""

    run: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=4222, ge=1, le=65535)
    leafnode_port: int = Field(default=7422, ge=1, le=65535)
    monitor_port: int = Field(default=8222, ge=1, le=65535)
    leaf_tls_cert: Path | None = None
    leaf_tls_key: Path | None = None
    leaf_users: list[LeafUserSettings] = Field(default_factory=list)
    cloud_password: str | None = Field(
        default=None, repr=False, description="login of cloud services once leaf_users are set"
    )

    @model_validator(mode="after")
    def _secured_hub_is_complete(self) -> Self:
        if (self.leaf_tls_cert is None) != (self.leaf_tls_key is None):
            raise ValueError("leaf_tls_cert and leaf_tls_key go together")
        if self.leaf_users and not self.cloud_password:
            raise ValueError("cloud_password is required once leaf_users are set")
        return self

    @property
    def url(self) -> str:
        """Client URL of the hub (with the cloud login once leaf users are configured)."""
        if self.leaf_users and self.cloud_password:
            login = f"{CLOUD_USER}:{quote(self.cloud_password, safe='')}@"
            return f"nats://{login}{self.host}:{self.port}"
        return f"nats://{self.host}:{self.port}"


class CloudConfig(_Frozen):
    """Everything the cloud side runs."""

    data_dir: Path = Path("var/cloud")
    hub: HubSettings = HubSettings()
    stream: CloudStreamSettings = CloudStreamSettings()
    inference: CloudInferenceSettings = CloudInferenceSettings()
    learning: LearningSettings = LearningSettings()


C = TypeVar("C", bound=BaseModel)


def load_config(model: type[C], path: Path) -> C:
    """Read and validate a YAML config; relative paths in it stay relative to the cwd.

    Raises:
        ConfigError: the file is unreadable, not YAML, or a field is invalid (named).

    """
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: invalid config: {problems}") from exc
