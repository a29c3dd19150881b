"""Incremental learning: triggers, warm-start retraining, a deploy gate, history.

Sedna's loop, done properly:

* **Trigger** — new labelled samples compared with an operator (``> >= = != <= <``), AND an
  optional daily time window, OR a staleness bound (the deployed model is older than
  ``staleness_s`` and at least one new label exists). Checked when a label arrives (an event)
  and at the exact moments the answer can change without one (the window opens, the
  staleness bound passes) — never on a fixed poll.
* **Retrain** — warm start from the deployed weights on the base data plus 80 % of the
  labelled hard examples (Sedna's trainProb 0.8; which 80 % is fixed by the example id).
* **Gate** — new and deployed are evaluated on the same held-out set (base hold-out plus the
  other 20 %); the update is published only if ``accuracy_delta`` passes the configured
  comparison, the set has at least ``min_eval_size`` samples, and the new model is strictly
  better: a worse (or equal) model is never deployed, whatever the configuration says.
* **History** — every decision, deployed or not, with its metrics (`HardExampleStore.history`,
  ``edgefabric models history``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from numpy.typing import NDArray

from aggregator.store import HardExampleStore, HistoryEntry
from aggregator.strategies import Weights
from aggregator.trainer import TrainConfig, accuracy, local_train, to_onnx
from aggregator.triggers import DeployGate, Trigger
from schemas.frames import pack
from schemas.models import ModelUpdate
from schemas.signing import sign_model_update

log = logging.getLogger(__name__)


class ModelSink(Protocol):
    """Where a deployed model frame goes (the downlink to every edge, in production)."""

    async def publish_model(self, name: str, frame: bytes) -> None:
        """Send one model-update frame for `name`."""
        ...


@dataclass(frozen=True, slots=True)
class Dataset:
    """Inputs [N, 64] and labels."""

    x: NDArray[np.float32]
    y: NDArray[np.int64]


def _holdout(example_id: str) -> bool:
    return int(hashlib.sha256(example_id.encode()).hexdigest()[:8], 16) % 5 == 0


class IncrementalLearner:
    """Retrains the edge model from labelled hard examples and deploys it past the gate.

    Args:
        store: labelled hard examples in, history out.
        sink: where a model that passed the gate is published.
        model: the model's name (``digits-edge``).
        deployed: the weights deployed now, and their `version` (a decimal counter).
        base: the base training data.
        holdout: the base held-out data (part of every evaluation).
        trigger: when to retrain.
        gate: when to deploy.
        train: retraining settings (warm start).
        signing_key: signs every published update when given (`schemas.signing`).

    """

    def __init__(
        self,
        store: HardExampleStore,
        sink: ModelSink,
        *,
        model: str,
        deployed: Weights,
        version: str,
        base: Dataset,
        holdout: Dataset,
        trigger: Trigger | None = None,
        gate: DeployGate | None = None,
        train: TrainConfig | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.model = model
        self.deployed = deployed
        self.version = version
        self.trigger = trigger or Trigger()
        self.gate = gate or DeployGate()
        self._sink = sink
        self._base = base
        self._holdout = holdout
        self._train = train or TrainConfig(epochs=10, lr=0.1, batch=32)
        self._key = signing_key
        self._clock = clock
        self.deployed_at = clock()
        self.last_retrain = 0.0
        self._wake = asyncio.Event()

    def labelled(self) -> None:
        """Tell the learner a label arrived (the `Labeller`'s ``on_labelled``)."""
        self._wake.set()

    async def check(self) -> HistoryEntry | None:
        """Retrain now if the trigger says so; the decision recorded, or None."""
        now = self._clock()
        reason = self.trigger.decide(
            self.store.labelled_since(self.last_retrain), now, self.deployed_at
        )
        return None if reason is None else await self.retrain(reason)

    async def retrain(self, reason: str) -> HistoryEntry:
        """Retrain, evaluate against the deployed model, deploy if the gate passes."""
        started = self._clock()
        ids, x, y = self.store.labelled()
        keep = np.array([not _holdout(i) for i in ids], dtype=bool)
        train_x = np.concatenate([self._base.x, *([x[keep]] if len(ids) else [])])
        train_y = np.concatenate([self._base.y, *([y[keep]] if len(ids) else [])])
        eval_x = np.concatenate([self._holdout.x, *([x[~keep]] if len(ids) else [])])
        eval_y = np.concatenate([self._holdout.y, *([y[~keep]] if len(ids) else [])])
        new = await asyncio.to_thread(local_train, self.deployed, train_x, train_y, self._train)
        old_acc = accuracy(self.deployed, eval_x, eval_y)
        new_acc = accuracy(new, eval_x, eval_y)
        ok, why = self.gate.judge(old_acc, new_acc, len(eval_y))
        version = str(int(self.version) + 1) if ok else self.version
        if ok:
            await self._publish(new, version, old_acc, new_acc)
            self.deployed, self.version, self.deployed_at = new, version, self._clock()
        self.last_retrain = started
        entry = HistoryEntry(
            at=started,
            model=self.model,
            version=version,
            trigger=reason,
            samples=len(ids),
            eval_size=len(eval_y),
            old_accuracy=old_acc,
            new_accuracy=new_acc,
            deployed=ok,
            decision=why,
        )
        self.store.record(entry)
        log.info("model %s: %s -> %s", self.model, reason, why)
        return entry

    async def _publish(self, weights: Weights, version: str, old: float, new: float) -> None:
        onnx_bytes = await asyncio.to_thread(to_onnx, weights, name=self.model, version=version)
        digest = hashlib.sha256(onnx_bytes).hexdigest()
        signature = None
        if self._key is not None:
            signature = sign_model_update(
                name=self.model, version=version, sha256=digest, private_key=self._key
            )
        header = ModelUpdate(
            name=self.model,
            version=version,
            sha256=digest,
            size=len(onnx_bytes),
            signature=signature,
            metrics={"accuracy": new, "previous_accuracy": old},
        )
        await self._sink.publish_model(self.model, pack(header, onnx_bytes))

    async def run(self) -> None:
        """Check on every label event and at the trigger's next change, until cancelled."""
        while True:
            self._wake.clear()
            await self.check()
            wake_at = self.trigger.next_change(self._clock(), self.deployed_at)
            timeout = None if wake_at is None else max(0.0, wake_at - self._clock())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
