"""Hard-example store, labelling, triggers, the deploy gate and the incremental learner."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from aggregator.errors import LabelNotFound
from aggregator.incremental import Dataset, DeployGate, IncrementalLearner, Trigger
from aggregator.labelling import Labeller, Outcome
from aggregator.store import HardExampleStore
from aggregator.trainer import TrainConfig, init_weights, local_train
from pipelines.digits import INPUT, OUTPUT
from schemas.frames import unpack
from schemas.models import ModelUpdate
from tests.aggregator.learning_support import hard_example_frame, pool, weak_model
from tests.aggregator.rig import digits


class Sink:
    """Keeps the frames a learner publishes."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes]] = []

    async def publish_model(self, name: str, frame: bytes) -> None:
        self.frames.append((name, frame))


async def test_store_dedupes_by_content_and_refuses_a_wrong_key(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path)
    labeller = Labeller(store, classify=lambda x: (3, 0.5))
    frame = hard_example_frame(pool().x[0])
    assert await labeller.handle("edge-1", frame) is Outcome.QUEUED
    assert await labeller.handle("edge-2", frame) is Outcome.DUPLICATE
    assert store.counts()["examples"] == 1
    tampered = frame[:-4] + b"\x00\x00\x80\x3f"
    assert await labeller.handle("edge-1", tampered) is Outcome.INVALID
    assert await labeller.handle("edge-1", b"junk") is Outcome.INVALID


async def test_storage_is_bounded_and_evicts_the_oldest_unlabelled_first(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path, max_examples=3)
    labeller = Labeller(store, classify=lambda x: (0, 0.1))
    ids = []
    for i in range(5):
        await labeller.handle("edge-1", hard_example_frame(pool().x[i]))
        ids.append(store.pending(10)[-1].id)
        if i == 0:
            store.set_label(ids[0], 7)  # the oldest, but labelled: kept
    counts = store.counts()
    assert (counts["examples"], counts["evicted"]) == (3, 2)
    kept = {e.id for e in store.pending(10)} | {ids[0]}
    assert kept == {ids[0], ids[3], ids[4]}
    files = list((tmp_path / "examples").rglob("*.eft"))
    assert len(files) == 3


async def test_confident_deep_model_labels_and_the_rest_queue_for_people(tmp_path: Path) -> None:
    store = HardExampleStore(tmp_path)
    events: list[None] = []
    confident = Labeller(
        store, classify=lambda x: (4, 0.99), on_labelled=lambda: events.append(None)
    )
    unsure = Labeller(store, classify=lambda x: (4, 0.60), on_labelled=lambda: events.append(None))
    assert (
        await confident.handle("edge-1", hard_example_frame(pool().x[0])) is Outcome.AUTO_LABELLED
    )
    assert await unsure.handle("edge-1", hard_example_frame(pool().x[1])) is Outcome.QUEUED
    (waiting,) = store.pending()
    assert waiting.label is None and waiting.edge == "edge-1" and waiting.reason == "cross_entropy"
    unsure.label(waiting.id[:10], 9)
    assert store.get(waiting.id).label == 9 and store.get(waiting.id).label_source == "human"
    assert len(events) == 2 and store.pending() == []
    with pytest.raises(LabelNotFound):
        store.set_label("ffffffffff", 1)


@pytest.mark.parametrize(
    ("op", "count", "fires"),
    [
        (">", 5, False),
        (">", 6, True),
        (">=", 5, True),
        ("=", 5, True),
        ("!=", 5, False),
        ("<=", 4, True),
        ("<", 5, False),
    ],
)
def test_sample_count_trigger_operators(op: str, count: int, fires: bool) -> None:
    trigger = Trigger(operator=op, num_of_samples=5)  # type: ignore[arg-type]
    assert (trigger.decide(count, now=1e9, deployed_at=1e9) is not None) is fires


def test_trigger_window_and_staleness_and_never_on_nothing() -> None:
    night = Trigger(num_of_samples=0, window=(dt.time(22, 0), dt.time(4, 0)))
    at = lambda h: dt.datetime(2026, 11, 28, h, 30).timestamp()  # noqa: E731
    assert night.decide(10, at(23), 0) is not None and night.decide(10, at(2), 0) is not None
    assert night.decide(10, at(12), 0) is None
    assert night.next_change(at(12), 0) == dt.datetime(2026, 11, 28, 22, 0).timestamp()
    stale = Trigger(num_of_samples=500, staleness_s=3600)
    assert stale.decide(3, now=10_000, deployed_at=10_000 - 3600) is not None
    assert stale.decide(3, now=10_000, deployed_at=10_000 - 60) is None
    assert stale.decide(0, now=10_000, deployed_at=0) is None
    assert stale.next_change(10_000, 9_000) == 12_600


def test_gate_needs_the_delta_the_size_and_never_passes_a_worse_model() -> None:
    gate = DeployGate(accuracy_delta=0.01, min_eval_size=100)
    assert gate.judge(0.90, 0.92, 200)[0]
    assert not gate.judge(0.90, 0.905, 200)[0]
    assert not gate.judge(0.90, 0.99, 50)[0]
    lax = DeployGate(operator=">=", accuracy_delta=-1.0)
    ok, why = lax.judge(0.90, 0.85, 500)
    assert not ok and "never deploy" in why


async def test_learner_deploys_a_better_model_from_labelled_hard_examples(tmp_path: Path) -> None:
    weights, base, holdout = weak_model()
    store, sink = HardExampleStore(tmp_path), Sink()
    learner = IncrementalLearner(
        store,
        sink,
        model="digits-edge",
        deployed=weights,
        version="1",
        base=base,
        holdout=holdout,
        trigger=Trigger(operator=">=", num_of_samples=200),
    )
    extra = pool()
    for x, y in zip(extra.x[:300], extra.y[:300], strict=True):
        labeller = Labeller(
            store, classify=lambda _, y=y: (int(y), 0.99), on_labelled=learner.labelled
        )
        await labeller.handle("edge-1", hard_example_frame(x))
    entry = await learner.check()
    assert entry is not None and entry.deployed, entry
    assert entry.new_accuracy > entry.old_accuracy + 0.05
    assert learner.version == "2"
    ((name, frame),) = sink.frames
    header, onnx_bytes = unpack(ModelUpdate, frame)
    assert (name, header.version) == ("digits-edge", "2")
    assert header.sha256 == hashlib.sha256(onnx_bytes).hexdigest()
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (p,) = session.run([OUTPUT], {INPUT: digits().x_test})
    assert float((np.asarray(p).argmax(1) == digits().y_test).mean()) > 0.85
    assert await learner.check() is None  # the counter restarts after a retrain
    assert [h.version for h in store.history()] == ["2"]


async def test_learner_never_deploys_a_worse_model(tmp_path: Path) -> None:
    split = digits()
    good = local_train(
        init_weights(0, 0), split.x_train, split.y_train, TrainConfig(epochs=20, lr=0.3)
    )
    store, sink = HardExampleStore(tmp_path), Sink()
    learner = IncrementalLearner(
        store,
        sink,
        model="digits-edge",
        deployed=good,
        version="7",
        base=Dataset(split.x_train[:20], split.y_train[:20]),
        holdout=Dataset(split.x_val, split.y_val),
        trigger=Trigger(num_of_samples=0),
        gate=DeployGate(operator=">=", accuracy_delta=-1.0),
    )
    labeller = Labeller(store, classify=lambda x: (0, 0.99))  # everything labelled "0": poison
    for x in pool().x[:300]:
        await labeller.handle("edge-1", hard_example_frame(x))
    entry = await learner.check()
    assert entry is not None and not entry.deployed
    assert entry.new_accuracy < entry.old_accuracy
    assert sink.frames == [] and learner.version == "7" and learner.deployed is good
    (recorded,) = store.history("digits-edge")
    assert not recorded.deployed and "never deploy" in recorded.decision
