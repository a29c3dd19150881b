"""Inference offload: phones and small devices send a pre-processed image, the edge answers.

Requests arrive on `topics.infer_request(model)` as frames (an `OffloadRequest` header and a
tensor body). Each is answered with an `OffloadResponse` on the MQTT v5 response topic when
the broker speaks v5, else on the header's `reply_to` (MQTT 3.1.1), carrying the correlation
id both ways. A request with the wrong shape, dtype or size gets an error reply; one that
cannot even say where to reply goes to the dead-letter topic. Requests are served
concurrently up to a bound, so a slow cloud call never holds up the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Self

import numpy as np
from nats.aio.client import Client as NatsClient
from numpy.typing import NDArray

from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from bus.mqtt_connection import PublishRefused
from bus.subscription import InboundMessage
from pipelines.breaker import CircuitBreaker
from pipelines.digits import bundled_models
from pipelines.errors import BadInput
from pipelines.hard_examples import HardExamplePublisher
from pipelines.joint import CloudModelClient, JointInference
from pipelines.model_slot import LoadedModel, ModelSlot, make_session
from pipelines.offload_settings import OffloadModelSettings, OffloadSettings
from schemas import topics
from schemas.base import check_name
from schemas.codec import encode
from schemas.errors import InvalidName, SchemaError
from schemas.frames import unpack
from schemas.offload import OffloadError, OffloadErrorCode, OffloadRequest, OffloadResponse
from schemas.status import DeadLetter
from schemas.tensor import decode_tensor

log = logging.getLogger(__name__)
SERVICE = "offload"


def as_sample(tensor: NDArray[np.generic], features: int) -> NDArray[np.float32]:
    """One image as the model's float32 feature vector.

    Accepts ``[features]``, ``[1, features]``, ``[h, w]`` or ``[1, h, w]`` with h*w = features;
    float32/float64 grey levels in 0..1, or uint8 grey levels 0..16 (the digits' scale).

    Raises:
        BadInput: anything else, with what was expected.
    """
    shape = tuple(int(d) for d in tensor.shape)
    if int(np.prod(shape)) != features or len(shape) > 3 or (len(shape) == 3 and shape[0] != 1):
        raise BadInput(f"expected one image of {features} values, got shape {list(shape)}")
    if tensor.dtype == np.uint8:
        sample = tensor.astype(np.float32).reshape(features) / 16.0
    elif tensor.dtype in (np.float32, np.float64):
        sample = tensor.astype(np.float32).reshape(features)
    else:
        raise BadInput(f"expected float32 or uint8, got {tensor.dtype}")
    if not np.all(np.isfinite(sample)) or sample.min() < 0.0 or sample.max() > 1.0:
        raise BadInput("values must be finite grey levels in 0..1 (uint8: 0..16)")
    return sample


class _OffloadModel:
    def __init__(self, joint: JointInference, hard: HardExamplePublisher, features: int) -> None:
        self.joint = joint
        self.hard = hard
        self.features = features


class OffloadService:
    """Answers offloaded inference requests for the configured models.

    Args:
        settings: the models and the concurrency bound.
        bus: the edge's MQTT client.
        nc: a NATS connection to the edge's leaf, for the cloud models; None = edge only.
    """

    def __init__(
        self,
        settings: OffloadSettings,
        *,
        bus: MqttClient,
        nc: NatsClient | None,
    ) -> None:
        self._bus = bus
        self._models = {m.name: self._build(m, bus, nc) for m in settings.models}
        self._limit = asyncio.Semaphore(settings.concurrency)
        self._tasks = ServiceTasks(SERVICE)
        self.answered = 0
        self.refused = 0

    @staticmethod
    def _build(cfg: OffloadModelSettings, bus: MqttClient, nc: NatsClient | None) -> _OffloadModel:
        path = cfg.model_path or bundled_models(cfg.version)[0]
        loaded = LoadedModel(
            version=cfg.version,
            session=make_session(path.read_bytes(), threads=cfg.intra_op_threads),
        )
        slot = ModelSlot(cfg.edge_model, loaded)
        cloud = None
        if nc is not None and cfg.cloud_model is not None:
            cloud = CloudModelClient(nc, cfg.cloud_model)
        joint = JointInference(
            slot,
            hem=cfg.hem.build(),
            cloud=cloud,
            deadline_s=cfg.deadline_ms / 1000,
            breaker=CircuitBreaker(failures=cfg.breaker_failures, reset_s=cfg.breaker_reset_s),
        )
        hard = HardExamplePublisher(bus, pipeline=f"offload-{cfg.name}", budget=cfg.hard_examples)
        shape = loaded.input_shape
        features = int(shape[-1]) if isinstance(shape[-1], int) else 0
        return _OffloadModel(joint, hard, features)

    def model(self, name: str) -> JointInference:
        """The joint inference of one offload model (for status and tests)."""
        return self._models[name].joint

    def slot(self, name: str) -> ModelSlot:
        """The hot-swappable edge model of one offload model."""
        return self._models[name].joint.edge

    def slots(self) -> dict[str, ModelSlot]:
        """Every edge model slot by its model name (what model updates address)."""
        return {m.joint.edge.name: m.joint.edge for m in self._models.values()}

    def hard_examples(self, name: str) -> HardExamplePublisher:
        """The hard-example publisher of one offload model."""
        return self._models[name].hard

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        await self._tasks.spawn_ready(self._serve, "requests")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.__aexit__(exc_type, exc, tb)

    async def _serve(self, ready: asyncio.Event) -> None:
        async with self._bus.subscribe(topics.infer_request_filter(), maxsize=1000) as sub:
            ready.set()
            async with asyncio.TaskGroup() as requests:
                async for message in sub:
                    await self._limit.acquire()
                    requests.create_task(self._handle(message), name=f"{SERVICE}.request")

    async def _handle(self, message: InboundMessage) -> None:
        started = time.perf_counter()
        try:
            await self._respond(message, started)
        except Exception as exc:  # one client's request must never end the service for all
            log.exception("offload request on %s failed", message.topic)
            await self._dead_letter(message, f"internal: {type(exc).__name__}: {exc}")
        finally:
            self._limit.release()

    async def _respond(self, message: InboundMessage, started: float) -> None:
        try:
            model_name = check_name(message.topic.split("/")[2])
        except InvalidName as exc:
            await self._dead_letter(message, f"unknown_model: {exc}")
            return
        try:
            header, body = unpack(OffloadRequest, message.payload)
        except SchemaError as exc:
            await self._refuse(message, None, model_name, "bad_request", exc.reason)
            return
        if _reply_topic(message, header) is None:
            topic = message.response_topic or header.reply_to
            await self._dead_letter(message, topics.reply_topic_refusal(topic) or "no reply topic")
            return
        model = self._models.get(model_name)
        if model is None or header.model != model_name:
            await self._refuse(
                message,
                header,
                model_name,
                "unknown_model",
                f"no offload model {header.model!r} on this edge",
            )
            return
        try:
            sample = as_sample(decode_tensor(body), model.features)
        except (SchemaError, BadInput) as exc:
            reason = exc.reason if isinstance(exc, SchemaError) else str(exc)
            await self._refuse(message, header, model_name, "bad_request", reason)
            return
        answer = await model.joint.answer(sample)
        if answer.is_hard_example:
            await model.hard.offer(
                sample,
                model=model_name,
                edge_result=answer.edge_result,
                cloud_result=answer.cloud_result,
                reason=answer.hard_reason or "hard",
            )
        response = OffloadResponse(
            model=model_name,
            correlation_id=header.correlation_id,
            label=answer.final_result.label,
            confidence=answer.final_result.confidence,
            answer=answer,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        self.answered += 1
        await self._reply(message, header, response)

    async def _refuse(
        self,
        message: InboundMessage,
        header: OffloadRequest | None,
        model: str,
        code: OffloadErrorCode,
        reason: str,
    ) -> None:
        """Dead-letter a refused request and, when it says where, answer it with the error."""
        self.refused += 1
        await self._dead_letter(message, f"{code}: {reason}")
        response = OffloadResponse(
            model=model,
            correlation_id=header.correlation_id if header else None,
            error=OffloadError(code=code, reason=reason),
        )
        await self._reply(message, header, response)

    async def _reply(
        self, message: InboundMessage, header: OffloadRequest | None, response: OffloadResponse
    ) -> None:
        reply_to = _reply_topic(message, header)
        if reply_to is None:
            return  # already dead-lettered: nobody can be told
        try:
            await self._bus.publish(
                reply_to, encode(response), correlation_data=message.correlation_data
            )
        except PublishRefused as exc:  # e.g. the ACL forbids us the client's reply topic
            await self._dead_letter(message, f"reply refused by the broker: {exc}")

    async def _dead_letter(self, message: InboundMessage, reason: str) -> None:
        letter = DeadLetter.of(
            service=SERVICE, topic=message.topic, reason=reason, payload=message.payload
        )
        try:
            await self._bus.publish(topics.dead_letter(SERVICE), encode(letter))
        except PublishRefused:  # the ACL lacks our dead-letter topic: the log must do
            log.warning("offload refused a request on %s: %s", message.topic, reason)


def _reply_topic(message: InboundMessage, header: OffloadRequest | None) -> str | None:
    """Where to answer: the v5 response topic, else the header's `reply_to`; None if unusable.

    Unusable (`schemas.topics.reply_topic_refusal`): a wildcard, empty or ``$`` topic would get
    our own connection dropped or refused, and an edgefabric topic outside a replies namespace
    would let a requester reflect our answer onto a control topic.
    """
    topic = message.response_topic or (header.reply_to if header else None)
    return None if topics.reply_topic_refusal(topic) else topic
