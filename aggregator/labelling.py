"""Cloud labelling: hard examples in from the uplink, stored, labelled by the deep model or queued.

Sedna writes hard examples to a folder and leaves labelling to people. Here every arriving
example is stored (`HardExampleStore`: deduped, bounded), then labelled automatically when the
deep cloud model is confident enough (``auto_label_confidence``, 0.95 by default: a wrong
automatic label teaches the edge the cloud's mistakes, so the bar is high); the rest wait in
the label queue that people work through with ``edgefabric label list`` / ``label set``.
Each new label is an event for the incremental learner (`on_labelled`), not a poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import LearningError
from aggregator.store import HardExampleStore
from schemas.errors import SchemaError
from schemas.frames import unpack
from schemas.hard_examples import HardExample
from schemas.tensor import decode_tensor

log = logging.getLogger(__name__)

Classify = Callable[[NDArray[np.float32]], tuple[int, float]]
"""The deep model: one input -> (label, confidence)."""


class Outcome(StrEnum):
    """What happened to one arriving hard example."""

    AUTO_LABELLED = "auto_labelled"
    QUEUED = "queued"
    DUPLICATE = "duplicate"
    INVALID = "invalid"


@dataclass
class LabellingCounters:
    """Totals per outcome."""

    auto_labelled: int = 0
    queued: int = 0
    duplicate: int = 0
    invalid: int = 0


class OnnxClassifier:
    """The deep cloud model as a `Classify` (onnxruntime, input ``pixels``)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort  # noqa: PLC0415 - heavy, only where a model is used

        from pipelines.digits import INPUT, OUTPUT  # noqa: PLC0415

        self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self._input, self._output = INPUT, OUTPUT

    def __call__(self, x: NDArray[np.float32]) -> tuple[int, float]:
        """Label and confidence of one input."""
        (probabilities,) = self._session.run(
            [self._output], {self._input: x.reshape(1, -1).astype(np.float32)}
        )
        row = np.asarray(probabilities)[0]
        return int(row.argmax()), float(row.max())


class Labeller:
    """Stores and labels hard examples.

    Args:
        store: where examples and labels go.
        classify: the deep model, called in a worker thread.
        auto_label_confidence: the deep model's confidence needed to label without a person.
        on_labelled: called (on the event loop) after each new label.
        input_size: elements the deep model takes (None: any); other examples are refused
            before they are stored, so a hostile edge cannot fill the label queue with
            inputs no model can learn from.

    """

    def __init__(
        self,
        store: HardExampleStore,
        *,
        classify: Classify,
        auto_label_confidence: float = 0.95,
        on_labelled: Callable[[], None] | None = None,
        input_size: int | None = None,
    ) -> None:
        self.store = store
        self.last_refusal = ""
        """Why the last `Outcome.INVALID` example was refused (for the dead letter)."""
        self._input_size = input_size
        self.counters = LabellingCounters()
        self._classify = classify
        self._threshold = auto_label_confidence
        self._on_labelled = on_labelled or (lambda: None)

    async def handle(self, edge: str, frame: bytes) -> Outcome:
        """Store one hard-example frame from `edge` and label it if the deep model is sure."""
        try:
            header, body = unpack(HardExample, frame)
            x = self._input(body)
            example_id = self.store.add(edge, header, body)
        except (SchemaError, LearningError, ValueError) as exc:
            log.warning("hard example from %s refused: %s", edge, exc)
            self.counters.invalid += 1
            self.last_refusal = str(exc)
            return Outcome.INVALID
        if example_id is None:
            self.counters.duplicate += 1
            return Outcome.DUPLICATE
        label, confidence = await asyncio.to_thread(self._classify, x)
        if confidence < self._threshold:
            self.counters.queued += 1
            return Outcome.QUEUED
        self.store.set_label(example_id, label, source="auto", confidence=confidence)
        self.counters.auto_labelled += 1
        self._on_labelled()
        return Outcome.AUTO_LABELLED

    def _input(self, body: bytes) -> NDArray[np.float32]:
        """The example's input, checked: a model-sized, finite tensor."""
        with np.errstate(over="ignore", invalid="ignore"):  # float64 past float32: inf
            x = np.asarray(decode_tensor(body), dtype=np.float32)
        if self._input_size is not None and x.size != self._input_size:
            raise LearningError(f"{x.size} inputs, the model takes {self._input_size}")
        if not np.all(np.isfinite(x)):
            raise LearningError("input holds nan or inf")
        return x

    def label(self, example_id: str, label: int) -> None:
        """A person's label (from the CLI or an API); an event for the learner."""
        self.store.set_label(example_id, label, source="human")
        self._on_labelled()

    async def run(self, frames: AsyncIterator[tuple[str, bytes]]) -> None:
        """Handle every (edge, frame) of the uplink's hard-examples class, until cancelled."""
        async for edge, frame in frames:
            await self.handle(edge, frame)
