"""The edge node: broker, leaf nats-server, mappers, twin, pipelines and bridge, composed.

This is the one place that wires services together; each still talks to the others only
through the bus.
"""

from __future__ import annotations

import contextlib
import logging
from types import TracebackType
from typing import Self

from bus.broker import EmbeddedBroker
from bus.mqtt import MqttClient, ProtocolChoice
from bus.nats_client import connect
from bus.nats_server import LeafSpec, NatsServer, edge_inbox_prefix
from cloud_bridge.bridge import CloudBridge
from cloud_bridge.settings import BridgeSettings
from edgefabric.config import EdgeConfig
from mappers.device import DeviceInstance, load_devices
from mappers.service import MapperService
from pipelines.model_updates import ModelUpdater
from pipelines.offload import OffloadService
from pipelines.service import PipelineService
from twin.service import TwinService

log = logging.getLogger(__name__)


class Edge:
    """All edge services of one config, started in dependency order and stopped in reverse."""

    def __init__(
        self, config: EdgeConfig, *, extra_devices: list[DeviceInstance] | None = None
    ) -> None:
        self.config = config
        self.devices = [d for path in config.devices for d in load_devices(path)]
        self.devices += extra_devices or []
        self.mappers: MapperService | None = None
        self.twin: TwinService | None = None
        self.pipelines: PipelineService | None = None
        self.offload: OffloadService | None = None
        self.models: ModelUpdater | None = None
        self.bridge: CloudBridge | None = None
        self.leaf: NatsServer | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def _protocol(self) -> ProtocolChoice:
        # amqtt refuses v5 and logs the refusal as an error; skip the probe for it.
        return "3.1.1" if self.config.broker.url is None else "auto"

    def _client(self, name: str, *, durable: bool = False) -> MqttClient:
        """A bus connection for one service; `durable` keeps unacked messages in the broker."""
        security = self.config.broker.security
        creds = security.credentials(name)
        return MqttClient(
            self.config.broker.client_url,
            client_id=f"{self.config.edge_id}-{name}",
            protocol=self._protocol,
            clean_session=not durable,
            manual_ack=durable,
            username=creds.username if creds else None,
            password=creds.password.get_secret_value() if creds else None,
            tls_context=security.client_tls_context(name),
        )

    async def __aenter__(self) -> Self:
        cfg = self.config
        async with contextlib.AsyncExitStack() as stack:
            if cfg.broker.url is None:
                await stack.enter_async_context(
                    EmbeddedBroker(
                        host=cfg.broker.host, port=cfg.broker.port, security=cfg.broker.security
                    )
                )
            if cfg.leaf.run and cfg.bridge.enabled:
                self.leaf = await stack.enter_async_context(
                    NatsServer(
                        LeafSpec(
                            edge_id=cfg.edge_id,
                            host=cfg.leaf.host,
                            port=cfg.leaf.port,
                            monitor_port=cfg.leaf.monitor_port,
                            store_dir=cfg.data_dir / "nats",
                            hub_leaf_urls=tuple(cfg.leaf.hub_leaf_urls),
                            sync_interval=cfg.leaf.sync_interval,
                            hub_user=cfg.leaf.hub_user,
                            hub_password=cfg.leaf.hub_password,
                            hub_ca_file=cfg.leaf.hub_ca_file,
                        )
                    )
                )
            if cfg.bridge.enabled:
                # Not entered here: the bridge subscribes first, then connects, so messages
                # the broker redelivers on connect cannot arrive before its subscriptions.
                bridge_bus = self._client("bridge", durable=True)
                self.bridge = await stack.enter_async_context(
                    CloudBridge(
                        BridgeSettings(
                            edge_id=cfg.edge_id,
                            leaf_url=cfg.leaf.url,
                            max_bytes=cfg.bridge.max_bytes,
                            batch=cfg.bridge.batch,
                            max_payload_bytes=cfg.bridge.max_payload_bytes,
                        ),
                        bus=bridge_bus,
                    )
                )
            if cfg.twin.enabled:
                twin_bus = await stack.enter_async_context(self._client("twin"))
                self.twin = await stack.enter_async_context(
                    TwinService(
                        bus=twin_bus,
                        db_path=cfg.data_dir / cfg.twin.db_file,
                        devices=self.devices,
                        write_timeout=cfg.twin.write_timeout_s,
                        kubeedge=cfg.twin.kubeedge,
                    )
                )
            if cfg.pipelines.streaming:
                pipe_bus = await stack.enter_async_context(self._client("pipelines"))
                self.pipelines = await stack.enter_async_context(
                    PipelineService(cfg.pipelines, bus=pipe_bus)
                )
            if cfg.pipelines.offload.models:
                await self._start_offload(stack)
            await self._start_model_updates(stack)
            if self.devices:
                mapper_bus = await stack.enter_async_context(self._client("mappers"))
                self.mappers = await stack.enter_async_context(
                    MapperService(self.devices, bus=mapper_bus)
                )
            self._stack = stack.pop_all()
        return self

    async def _start_model_updates(self, stack: contextlib.AsyncExitStack) -> None:
        """Model updates, status and rollback for every model slot the pipelines serve."""
        slots = {**(self.pipelines.slots if self.pipelines else {})}
        slots |= self.offload.slots() if self.offload else {}
        if not slots or not self.config.pipelines.updates.enabled:
            return
        models_bus = await stack.enter_async_context(self._client("models"))
        self.models = await stack.enter_async_context(
            ModelUpdater(
                self.config.pipelines.updates,
                bus=models_bus,
                slots=slots,
                state_dir=self.config.data_dir / "models",
            )
        )

    async def _start_offload(self, stack: contextlib.AsyncExitStack) -> None:
        """Offload and joint inference; the cloud model is reached through the leaf."""
        cfg = self.config
        nc = None
        if cfg.bridge.enabled:
            nc = await connect(
                cfg.leaf.url,
                name=f"{cfg.edge_id}-offload",
                inbox_prefix=edge_inbox_prefix(cfg.edge_id),
            )
            stack.push_async_callback(nc.close)
        offload_bus = await stack.enter_async_context(self._client("offload"))
        self.offload = await stack.enter_async_context(
            OffloadService(cfg.pipelines.offload, bus=offload_bus, nc=nc)
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
