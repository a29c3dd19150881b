"""The learning loops through the real bridge: Mosquitto, edge leaf, hub, cloud services.

Incremental: the edge publishes hard examples on its local broker -> the bridge carries them
up -> the cloud stores them and the deep model labels them -> the trigger fires -> a retrained
model passes the gate -> the downlink delivers it retained on the edge's broker -> the edge
checks its digest and swaps it into its model slot, and answers better.

Federated: one edge trains behind the real bridge (MQTT links both ways) beside four
simulated edges; its updates reach the coordinator and the global model reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

import numpy as np

from aggregator.coordinator import Coordinator
from aggregator.edge_trainer import EdgeTrainer
from aggregator.incremental import IncrementalLearner, Trigger
from aggregator.job import JobConfig
from aggregator.labelling import Labeller, OnnxClassifier
from aggregator.service import DownlinkModelSink, LearningService
from aggregator.store import HardExampleStore
from aggregator.trainer import (
    TrainConfig,
    accuracy,
    dirichlet_split,
    init_weights,
    local_train,
    to_onnx,
)
from aggregator.transport import MqttEdgeLink, NatsCloudTransport, NatsEdgeLink
from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from cloud_bridge.bridge import CloudBridge
from cloud_bridge.downlink import CloudPublisher
from cloud_bridge.settings import BridgeSettings
from pipelines.model_slot import LoadedModel, ModelSlot, make_session
from schemas import topics
from schemas.frames import unpack
from schemas.models import ModelUpdate
from tests.aggregator.learning_support import hard_example_frame, pool, weak_model
from tests.aggregator.rig import EDGES, digits
from tests.conftest import NatsLink
from tests.support import wait_for


def bridge(nats_link: NatsLink, broker_url: str) -> CloudBridge:
    settings = BridgeSettings(edge_id=nats_link.edge_id, leaf_url=nats_link.leaf.url)
    bus = MqttClient(
        broker_url, client_id=f"{nats_link.edge_id}-bridge", clean_session=False, manual_ack=True
    )
    return CloudBridge(settings, bus=bus)


def slot_accuracy(slot: ModelSlot) -> float:
    outputs, _ = slot.run_sync(digits().x_test)
    return float((outputs.argmax(axis=1) == digits().y_test).mean())


async def test_hard_examples_become_a_better_model_that_the_edge_swaps_in(
    nats_link: NatsLink, mosquitto_url: str, tmp_path: Path
) -> None:
    weights, base, holdout = weak_model()
    slot = ModelSlot(
        "digits-edge", LoadedModel("1", make_session(to_onnx(weights, name="e", version="1")))
    )
    before = slot_accuracy(slot)
    split = digits()
    deep = local_train(
        init_weights(64, 2), split.x_train, split.y_train, TrainConfig(epochs=30, lr=0.1)
    )
    (tmp_path / "deep.onnx").write_bytes(to_onnx(deep, name="digits-cloud", version="1"))
    store = HardExampleStore(tmp_path / "learning")
    async with CloudPublisher(nats_link.hub.url) as publisher:
        learner = IncrementalLearner(
            store,
            DownlinkModelSink(publisher),
            model="digits-edge",
            deployed=weights,
            version="1",
            base=base,
            holdout=holdout,
            trigger=Trigger(operator=">=", num_of_samples=150),
        )
        labeller = Labeller(
            store, classify=OnnxClassifier(tmp_path / "deep.onnx"), on_labelled=learner.labelled
        )
        async with (
            LearningService(nats_link.hub.url, labeller=labeller, learner=learner),
            bridge(nats_link, mosquitto_url),
            MqttClient(mosquitto_url, client_id="edge-pipeline") as edge,
            edge.subscribe(topics.model_update("digits-edge")) as updates,
        ):
            for x in pool().x[:400]:
                await edge.publish(topics.hard_examples("digits"), hard_example_frame(x))
            async with asyncio.timeout(60):
                message = await anext(aiter(updates))
            (entry,) = store.history()
    header, onnx_bytes = unpack(ModelUpdate, message.payload)
    assert header.sha256 == hashlib.sha256(onnx_bytes).hexdigest()
    slot.swap(LoadedModel(header.version, make_session(onnx_bytes), header.sha256))
    assert slot.version == "2"
    assert slot_accuracy(slot) > before + 0.05, (before, slot_accuracy(slot))
    assert entry.deployed and entry.samples >= 150
    assert labeller.counters.auto_labelled >= 150


async def test_an_edge_behind_the_real_bridge_takes_part_in_federated_rounds(
    nats_link: NatsLink, mosquitto_url: str
) -> None:
    split = digits()
    parts = dirichlet_split(split.y_train, len(EDGES), alpha=0.5, seed=0)
    real_edge = nats_link.edge_id  # "edge-1": the leaf's edge
    config = JobConfig(job="bridged", edges=EDGES, rounds=3, round_timeout_s=20)
    accuracy_of = lambda w: accuracy(w, split.x_test, split.y_test)  # noqa: E731
    async with contextlib.AsyncExitStack() as stack:
        trainers = []
        for i, (edge, idx) in enumerate(zip(EDGES, parts, strict=True)):
            if edge == real_edge:
                bus = await stack.enter_async_context(MqttClient(mosquitto_url, client_id="fl"))
                link: MqttEdgeLink | NatsEdgeLink = MqttEdgeLink(bus, job=config.job)
            else:
                link = await stack.enter_async_context(
                    NatsEdgeLink(nats_link.hub.url, edge=edge, job=config.job)
                )
            trainers.append(
                EdgeTrainer(
                    edge=edge, link=link, x=split.x_train[idx], y=split.y_train[idx], seed=i
                )
            )
        await stack.enter_async_context(bridge(nats_link, mosquitto_url))
        tasks = await stack.enter_async_context(ServiceTasks("test-edges"))
        for trainer in trainers:
            tasks.spawn(trainer.run(), trainer.edge)
        transport = await stack.enter_async_context(
            NatsCloudTransport(nats_link.hub.url, config.job)
        )
        coordinator = await stack.enter_async_context(
            Coordinator(config, transport, initial=init_weights(0, 0), evaluate=accuracy_of)
        )
        records = await coordinator.run()
        await wait_for(lambda: trainers[0].final_weights is not None, 20, what="final at edge")
    assert all(r.status == "completed" and real_edge in r.answered for r in records)
    assert trainers[0].rounds_answered == 3
    assert trainers[0].final_weights is not None
    np.testing.assert_array_equal(trainers[0].final_weights[0], coordinator.weights[0])
