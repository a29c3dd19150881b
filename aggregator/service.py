"""The cloud learning service: hard examples in from the uplink, better edge models out.

Wiring (all over the hub; the bridge carries both directions)::

    ef.up.*.hard-examples.>  --CloudConsumer-->  Labeller  --labels-->  HardExampleStore
                                                 Labeller  --event--->  IncrementalLearner
    IncrementalLearner  --ModelUpdate frame-->  CloudPublisher  ef.down.all.model.{model}
                                                  (edges: retained ef/models/{model}/update)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Self

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from aggregator.incremental import Dataset, IncrementalLearner
from aggregator.labelling import Labeller, OnnxClassifier
from aggregator.settings import LearningSettings
from aggregator.store import HardExampleStore
from aggregator.trainer import weights_from_onnx
from bus.lifecycle import ServiceTasks
from cloud_bridge.cloud_consumer import CloudConsumer
from cloud_bridge.downlink import MODEL, CloudPublisher
from schemas import topics
from schemas.signing import load_private_key
from schemas.topics import TrafficClass

log = logging.getLogger(__name__)


class DownlinkModelSink:
    """Publishes model-update frames to every edge through the downlink stream."""

    def __init__(self, publisher: CloudPublisher) -> None:
        self._publisher = publisher

    async def publish_model(self, name: str, frame: bytes) -> None:
        """Store the frame for every edge (chunked by the publisher past 512 KiB)."""
        await self._publisher.publish(None, MODEL, name, payload=frame)


class LearningService:
    """Runs a `Labeller` on the uplink's hard examples and an `IncrementalLearner`.

    The caller builds the learner with a `DownlinkModelSink` on a `CloudPublisher` it has
    entered, and the labeller with ``on_labelled=learner.labelled``. The service owns the
    labeller's store from then on: it is closed when the service stops.

    Args:
        hub_url: the hub's client URL.
        labeller: stores and labels arriving examples.
        learner: retrains and deploys.
        durable: the uplink consumer's durable name.

    """

    def __init__(
        self,
        hub_url: str,
        *,
        labeller: Labeller,
        learner: IncrementalLearner,
        durable: str = "learning",
    ) -> None:
        self.labeller = labeller
        self.learner = learner
        self._consumer = CloudConsumer(
            hub_url,
            durable=durable,
            filter_subject=topics.uplink_filter(None, TrafficClass.HARD_EXAMPLES),
        )
        self._hub_url = hub_url
        self._nc: NatsClient | None = None
        self._tasks = ServiceTasks("aggregator.learning")

    async def _on_people_labelled(self, _msg: Msg) -> None:
        self.learner.labelled()

    async def __aenter__(self) -> Self:
        await self._consumer.__aenter__()
        try:
            # Labels set by people (`edgefabric label set --hub`) arrive as a core message.
            self._nc = await nats.connect(
                self._hub_url, connect_timeout=2, max_reconnect_attempts=-1
            )
            await self._nc.subscribe(topics.learning_labelled(), cb=self._on_people_labelled)
            await self._tasks.__aenter__()
            self._tasks.spawn(self.labeller.run(self._frames()), "hard-examples")
            self._tasks.spawn(self.learner.run(), "learner")
        except BaseException:
            await self._close_nats()
            await self._consumer.__aexit__(None, None, None)
            raise
        return self

    async def _close_nats(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await nc.close()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._tasks.__aexit__(et, e, tb)
        finally:
            await self._close_nats()
            await self._consumer.__aexit__(et, e, tb)
            self.labeller.store.close()

    async def _frames(self) -> AsyncIterator[tuple[str, bytes]]:
        async for message in self._consumer.messages():
            yield message.edge, message.payload
            if self.labeller.last_refusal:  # refused: on ef.cloud.dead-letter.learning
                reason, self.labeller.last_refusal = self.labeller.last_refusal, ""
                await self._consumer.dead_letters(message.subject, message.payload, reason)


def build_learning_service(
    hub_url: str, publisher: CloudPublisher, *, data_dir: Path, settings: LearningSettings
) -> LearningService:
    """The service `edgefabric cloud` runs, built from its settings.

    Store under ``<data_dir>/learning``; the bundled digits models unless others are
    configured; the digits training split as base data and its validation split as the base
    hold-out. The deployed version continues from the history's latest deployment.
    """
    from pipelines.digits import bundled_models, load_digits_split  # noqa: PLC0415 - heavy

    edge_path, cloud_path = bundled_models()
    store = HardExampleStore(
        data_dir / "learning", max_examples=settings.max_examples, max_bytes=settings.max_bytes
    )
    deployed = [h for h in store.history(settings.model) if h.deployed]
    split = load_digits_split()
    learner = IncrementalLearner(
        store,
        DownlinkModelSink(publisher),
        model=settings.model,
        deployed=weights_from_onnx((settings.edge_model or edge_path).read_bytes()),
        version=deployed[-1].version if deployed else "1",
        base=Dataset(split.x_train, split.y_train),
        holdout=Dataset(split.x_val, split.y_val),
        trigger=settings.trigger,
        gate=settings.gate,
        signing_key=load_private_key(settings.signing_key) if settings.signing_key else None,
    )
    labeller = Labeller(
        store,
        classify=OnnxClassifier(settings.cloud_model or cloud_path),
        auto_label_confidence=settings.auto_label_confidence,
        on_labelled=learner.labelled,
        input_size=int(split.x_train.shape[1]),
    )
    return LearningService(hub_url, labeller=labeller, learner=learner)
