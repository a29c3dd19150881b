"""The cloud side: the hub nats-server and the services that consume what edges send up."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from types import TracebackType
from typing import Self

from aggregator.service import LearningService, build_learning_service
from bus.nats_server import HubSpec, LeafUser, NatsServer
from cloud_bridge.cloud_consumer import CloudConsumer, UplinkMessage
from cloud_bridge.downlink import CloudPublisher
from edgefabric.config import CloudConfig
from pipelines.cloud_inference import CloudInferenceService
from pipelines.digits import bundled_models
from pipelines.model_slot import LoadedModel, ModelSlot, make_session
from schemas.codec import decode
from schemas.errors import SchemaError
from schemas.inference import InferenceResult
from schemas.topics import TrafficClass

log = logging.getLogger(__name__)


class ResultsSink:
    """A cloud consumer of edge inference results that keeps counts and the latest results.

    It stands for the cloud services users build on the uplink stream.
    """

    def __init__(self) -> None:
        self.received = 0
        self.latest: dict[tuple[str, str], InferenceResult] = {}
        self.invalid = 0

    def handle(self, message: UplinkMessage) -> InferenceResult | None:
        """Account for one uplink message; return it parsed when it is a result."""
        if message.traffic_class is not TrafficClass.RESULTS:
            return None
        try:
            result = decode(InferenceResult, message.payload)
        except SchemaError as exc:
            self.invalid += 1
            log.warning("edge %s sent an invalid result: %s", message.edge, exc.reason)
            return None
        self.received += 1
        self.latest[(message.edge, result.device)] = result
        return result


class Cloud:
    """The hub (when configured to run it) plus the uplink stream."""

    def __init__(self, config: CloudConfig) -> None:
        self.config = config
        self.hub: NatsServer | None = None
        self.inference: CloudInferenceService | None = None
        self.learning: LearningService | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    def consumer(self, durable: str) -> CloudConsumer:
        """A consumer of the uplink stream (the stream is created on first use)."""
        return CloudConsumer(self.config.hub.url, durable=durable, stream=self.config.stream)

    async def __aenter__(self) -> Self:
        hub = self.config.hub
        async with contextlib.AsyncExitStack() as stack:
            if hub.run:
                self.hub = await stack.enter_async_context(NatsServer(self._hub_spec()))
            if self.config.inference.enabled and self.config.inference.models:
                self.inference = await stack.enter_async_context(
                    CloudInferenceService(self.config.hub.url, self._inference_models())
                )
            edges = [u.edge for u in hub.leaf_users if u.edge is not None]
            if self.config.learning.enabled or edges:
                publisher = await stack.enter_async_context(
                    CloudPublisher(self.config.hub.url, replicas=self.config.stream.replicas)
                )
                for edge in edges:  # confined edges may not create their own consumer
                    await publisher.provision(edge)
            if self.config.learning.enabled:
                self.learning = await stack.enter_async_context(
                    build_learning_service(
                        self.config.hub.url,
                        publisher,
                        data_dir=self.config.data_dir,
                        settings=self.config.learning,
                    )
                )
            self._stack = stack.pop_all()
        return self

    def _hub_spec(self) -> HubSpec:
        """The hub's nats-server spec, with leaf TLS and per-edge logins when configured."""
        hub = self.config.hub
        spec = HubSpec(
            name="hub",
            host=hub.host,
            port=hub.port,
            leafnode_port=hub.leafnode_port,
            monitor_port=hub.monitor_port,
            store_dir=self.config.data_dir / "nats",
            leaf_tls_cert=hub.leaf_tls_cert,
            leaf_tls_key=hub.leaf_tls_key,
            leaf_users=tuple(LeafUser(u.user, u.password, edge=u.edge) for u in hub.leaf_users),
        )
        if hub.cloud_password:
            spec = dataclasses.replace(spec, cloud_password=hub.cloud_password)
        return spec

    def _inference_models(self) -> dict[str, ModelSlot]:
        """The deep models; the repo's digits cloud model when no file is given."""
        slots = {}
        for name, path in self.config.inference.models.items():
            source = path or bundled_models()[1]
            loaded = LoadedModel(version="1", session=make_session(source.read_bytes()))
            slots[name] = ModelSlot(name, loaded)
        return slots

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
