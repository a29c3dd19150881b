"""Streaming inference: windows of readings per device -> ONNX Runtime -> results on the bus."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from types import TracebackType
from typing import Self

import numpy as np
import onnxruntime as ort

from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from bus.subscription import InboundMessage
from pipelines.anomaly_model import (
    INPUT,
    PROBABILITY,
    SCORE,
    build_anomaly_onnx,
    synthetic_normal_windows,
    train_anomaly_model,
)
from pipelines.settings import StreamingPipelineSettings
from schemas import topics
from schemas.codec import decode, encode
from schemas.errors import SchemaError
from schemas.inference import InferenceResult
from schemas.readings import Quality, Reading
from schemas.status import DeadLetter

log = logging.getLogger(__name__)
SERVICE = "pipelines"


def load_session(model: bytes, *, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session sized for a small edge box."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


class StreamingPipeline:
    """One pipeline: a sliding window per device, an inference every `hop` readings.

    Inference runs in a worker thread so the event loop keeps draining the bus meanwhile.
    """

    def __init__(self, settings: StreamingPipelineSettings, *, bus: MqttClient) -> None:
        self.settings = settings
        self._bus = bus
        if settings.model_path is not None:
            model = settings.model_path.read_bytes()
        else:
            params = train_anomaly_model(synthetic_normal_windows(settings.window))
            model = build_anomaly_onnx(params, model_version=settings.model_version)
        self._session = load_session(model, threads=settings.intra_op_threads)
        self._windows: dict[str, deque[float]] = {}
        self._since_last: dict[str, int] = {}
        self._tasks = ServiceTasks(f"{SERVICE}[{settings.name}]")
        self.results = 0
        self.rejected = 0

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        self._tasks.spawn(self._consume(), "readings")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.__aexit__(exc_type, exc, tb)

    async def _consume(self) -> None:
        topic_filter = topics.readings_filter(self.settings.device, self.settings.property)
        async with self._bus.subscribe(topic_filter, maxsize=2000) as sub:
            async for message in sub:
                await self._on_message(message)

    async def _on_message(self, message: InboundMessage) -> None:
        try:
            reading = decode(Reading, message.payload)
            value = float(reading.value)
        except (SchemaError, TypeError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, SchemaError) else f"value: {exc}"
            self.rejected += 1
            letter = DeadLetter.of(service=SERVICE, topic=message.topic, reason=reason,
                                   payload=message.payload)
            await self._bus.publish(topics.dead_letter(SERVICE), encode(letter))
            return
        if reading.quality is Quality.BAD:
            return
        window = self._windows.setdefault(reading.device, deque(maxlen=self.settings.window))
        window.append(value)
        count = self._since_last.get(reading.device, 0) + 1
        self._since_last[reading.device] = count
        if len(window) < self.settings.window or count < self.settings.hop:
            return
        self._since_last[reading.device] = 0
        batch = np.asarray([window], dtype=np.float32)
        score, probability = await asyncio.to_thread(
            self._session.run, [SCORE, PROBABILITY], {INPUT: batch}
        )
        p = float(probability[0])
        result = InferenceResult(
            pipeline=self.settings.name,
            device=reading.device,
            model=self.settings.model_name,
            model_version=self.settings.model_version,
            outputs={"score": float(score[0]), "anomaly_probability": p},
            label="anomaly" if p >= self.settings.anomaly_threshold else "normal",
            score=p,
            source_timestamp=reading.timestamp,
        )
        await self._bus.publish(topics.result(self.settings.name, reading.device), encode(result))
        self.results += 1
