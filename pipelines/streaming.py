"""Streaming inference: windows of readings per device -> features -> ONNX Runtime -> results.

Two tasks per pipeline. The reader decodes readings, keeps each device's window and queues a
window when it is due; it never waits on inference. The inferrer takes what is queued (a
micro-batch: up to `max_batch` windows, fewer when the measured per-row cost would overrun
`latency_budget_ms`), computes features and runs the model in a worker thread, and publishes
one result per window. So readings that arrive faster than single inferences would keep up
with are served by batched calls instead of queueing up behind each other. The queue of due
windows is bounded and drops the oldest (counted in `dropped`).

The model lives in a `ModelSlot`, so a model update swaps it without stopping the stream.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from types import TracebackType
from typing import Self

import numpy as np
from numpy.typing import NDArray

from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from bus.subscription import InboundMessage
from pipelines.anomaly_model import build_anomaly_onnx, train_anomaly_model
from pipelines.features import FeatureExtractor, feature_length
from pipelines.model_slot import LoadedModel, ModelSlot, make_session
from pipelines.settings import StreamingPipelineSettings, is_glob
from pipelines.windows import DueWindow, Windows
from schemas import topics
from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.inference import InferenceResult
from schemas.readings import Quality, Reading
from schemas.status import DeadLetter

log = logging.getLogger(__name__)
SERVICE = "pipelines"


def default_model(settings: StreamingPipelineSettings) -> bytes:
    """The project's anomaly model, trained on synthetic normal vibration for these features.

    Raw windows pool their statistics (readings in a window are exchangeable); other
    features get per-feature statistics.
    """
    rng = np.random.default_rng(0)
    normal = rng.normal(0.0, 0.04, size=(512, settings.window))
    extractor = FeatureExtractor(settings.features)
    rows = extractor.extract_many(normal)
    params = train_anomaly_model(rows, pooled=settings.features.kinds == ["raw"])
    return build_anomaly_onnx(params, model_version=settings.model_version)


def _reading_value(message: InboundMessage) -> tuple[Reading, float]:
    reading = decode(Reading, message.payload)
    value = float(reading.value)
    if not math.isfinite(value):
        # 'nan' and 'inf' parse as floats and would poison the window until it slides out.
        raise ValueError(f"non-finite value {reading.value!r}")
    return reading, value


class StreamingPipeline:
    """One pipeline: a window per device, micro-batched inference off the event loop.

    Args:
        settings: the pipeline's config.
        bus: the edge's MQTT client.
        slot: an already loaded model (tests, or a service sharing one); None loads
            `settings.model_path`, or builds the project's anomaly model.
    """

    def __init__(
        self,
        settings: StreamingPipelineSettings,
        *,
        bus: MqttClient,
        slot: ModelSlot | None = None,
    ) -> None:
        self.settings = settings
        self._bus = bus
        self._features = FeatureExtractor(settings.features)
        if slot is None:
            path = settings.model_path
            model = path.read_bytes() if path is not None else default_model(settings)
            session = make_session(model, threads=settings.intra_op_threads)
            slot = ModelSlot(settings.model_name, LoadedModel(settings.model_version, session))
        self.slot = slot
        self._check_model()
        self._windows = Windows(settings)
        self._due: deque[DueWindow] = deque()
        self._wake = asyncio.Event()
        self._row_cost_s = 0.0
        self._tasks = ServiceTasks(f"{SERVICE}[{settings.name}]")
        self.results = 0
        self.rejected = 0
        self.dropped = 0
        self.batches = 0

    def _check_model(self) -> None:
        width = self.slot.active.input_shape[-1]
        # Time windows have no 'raw' part (refused in settings), so the length is fixed too.
        length = feature_length(self.settings.features, self.settings.window)
        self._features.check(length)
        if isinstance(width, int) and width != length:
            raise ValueError(
                f"pipeline {self.settings.name}: model input is {width} wide, "
                f"the features are {length}"
            )

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        self._tasks.spawn(self._infer_loop(), "infer")
        await self._tasks.spawn_ready(self._consume, "readings")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.__aexit__(exc_type, exc, tb)

    async def _consume(self, ready: asyncio.Event) -> None:
        s = self.settings
        topic_filter = topics.readings_filter(
            None if is_glob(s.device) else s.device, None if is_glob(s.property) else s.property
        )
        async with self._bus.subscribe(topic_filter, maxsize=2000) as sub:
            ready.set()
            async for message in sub:
                await self._on_message(message)

    async def _reject(self, message: InboundMessage, reason: str) -> None:
        self.rejected += 1
        letter = DeadLetter.of(
            service=SERVICE, topic=message.topic, reason=reason, payload=message.payload
        )
        await self._bus.publish(topics.dead_letter(SERVICE), encode(letter))

    async def _on_message(self, message: InboundMessage) -> None:
        try:
            reading, value = _reading_value(message)
        except (SchemaError, TypeError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, SchemaError) else f"value: {exc}"
            await self._reject(message, reason)
            return
        # The ACL confines a mapper by topic, so the topic, not the body, says whose reading
        # it is: a body naming another device must not feed (and fake) that device's results.
        if message.topic != topics.reading(reading.device, reading.property):
            await self._reject(
                message, f"body names {reading.device}/{reading.property}, topic is {message.topic}"
            )
            return
        if reading.quality is Quality.BAD:
            return
        if not self.settings.matches(reading.device, reading.property):
            return
        due = self._windows.add(reading.device, value, reading.timestamp, time.monotonic())
        if due is None:
            return
        if len(self._due) >= self.settings.queue_size:
            self._due.popleft()
            self.dropped += 1
        self._due.append(due)
        self._wake.set()

    def _batch_limit(self) -> int:
        s = self.settings
        if self._row_cost_s <= 0:
            return s.max_batch
        fits = int(s.latency_budget_ms / 1000 / self._row_cost_s)
        return max(1, min(s.max_batch, fits))

    async def _next_batch(self) -> list[DueWindow]:
        while not self._due:
            self._wake.clear()
            await self._wake.wait()
        limit = self._batch_limit()
        wait_until = self._due[0].queued_at + self.settings.batch_wait_ms / 1000
        while len(self._due) < limit and (remaining := wait_until - time.monotonic()) > 0:
            self._wake.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            except TimeoutError:
                break
        return [self._due.popleft() for _ in range(min(limit, len(self._due)))]

    async def _infer_loop(self) -> None:
        while True:
            await self._infer(await self._next_batch())

    def _run(self, batch: list[DueWindow]) -> tuple[dict[str, NDArray[np.float32]], str, float]:
        started = time.perf_counter()
        rows = np.stack([self._features.extract(w.values) for w in batch])
        names = self.settings.output_names or None
        outputs, version = self.slot.run_outputs_sync(rows, names)
        return outputs, version, time.perf_counter() - started

    async def _infer(self, batch: list[DueWindow]) -> None:
        try:
            outputs, version, spent = await asyncio.to_thread(self._run, batch)
        except Exception as exc:  # onnxruntime raises untyped errors; keep the stream alive
            self.rejected += len(batch)
            log.warning("pipeline %s: inference failed: %s", self.settings.name, exc)
            return
        cost = spent / len(batch)
        self._row_cost_s = cost if self._row_cost_s == 0 else 0.8 * self._row_cost_s + 0.2 * cost
        self.batches += 1
        for i, window in enumerate(batch):
            result = self._result(window, {k: v[i] for k, v in outputs.items()}, version)
            topic = topics.result(
                self.settings.result_pipeline or self.settings.name, window.device
            )
            await self._bus.publish(topic, encode(result))
            self.results += 1

    def _result(
        self, window: DueWindow, row: dict[str, NDArray[np.float32]], version: str
    ) -> InferenceResult:
        s = self.settings
        key = s.score_output if s.score_output in row else next(iter(row))
        score_values = np.asarray(row[key]).reshape(-1)
        if score_values.size == 1:
            score = float(score_values[0])
            label = s.labels[1] if score >= s.anomaly_threshold else s.labels[0]
        else:
            best = int(score_values.argmax())
            score = float(score_values[best])
            label = s.class_labels[best] if best < len(s.class_labels) else str(best)
        outputs = {
            name: (float(v.reshape(-1)[0]) if v.size == 1 else [float(x) for x in v.reshape(-1)])
            for name, v in row.items()
        }
        return InferenceResult(
            pipeline=s.name,
            device=window.device,
            model=s.model_name,
            model_version=version,
            outputs=outputs,
            label=label,
            score=score,
            source_timestamp=window.source_timestamp,
        )
