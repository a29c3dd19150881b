"""The deep model in the cloud, served over NATS request-reply in a queue group.

Every replica subscribes `topics.cloud_infer(model)` in queue group
`topics.CLOUD_INFER_QUEUE`, so NATS hands each request to one replica: more replicas, more
throughput, no coordination. Requests are tensor frames; replies are `CloudInferReply` JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import numpy as np
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ConfigDict

from bus.nats_client import connect
from pipelines.model_slot import ModelSlot
from schemas import topics
from schemas.codec import encode
from schemas.errors import SchemaError
from schemas.inference import Prediction
from schemas.tensor import decode_tensor

log = logging.getLogger(__name__)


class CloudInferenceSettings(BaseModel):
    """Which deep models the cloud serves; a None path is the project's digits cloud model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    models: dict[str, Path | None] = {"digits-cloud": None}


class CloudInferReply(BaseModel):
    """The cloud model's answer to one request: one prediction per sample, or an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["ok", "error"] = "ok"
    predictions: list[Prediction] = []
    model_version: str = ""
    error: str = ""


def predictions_of(probabilities: np.ndarray, version: str) -> list[Prediction]:
    """One `Prediction` per row of class probabilities."""
    return [
        Prediction(
            label=int(row.argmax()),
            confidence=float(np.clip(row.max(), 0.0, 1.0)),
            probabilities=[round(float(p), 6) for p in row],
            model_version=version,
        )
        for row in probabilities
    ]


class CloudInferenceService:
    """Serves each model in `models` on its cloud-infer subject (async context manager).

    Args:
        nats_url: the hub (or any server of the cloud cluster).
        models: model name (as the edge asks for it) -> its slot.
    """

    def __init__(self, nats_url: str, models: Mapping[str, ModelSlot]) -> None:
        self._url = nats_url
        self._models = dict(models)
        self._nc: NatsClient | None = None
        self._subs: list[Subscription] = []
        self.served = 0
        self.refused = 0

    async def __aenter__(self) -> Self:
        self._nc = await connect(self._url, name="edgefabric-cloud-inference")
        for name in self._models:
            self._subs.append(
                await self._nc.subscribe(
                    topics.cloud_infer(name), queue=topics.CLOUD_INFER_QUEUE, cb=self._handle
                )
            )
        await self._nc.flush()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await nc.drain()

    async def _handle(self, msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[-1]
        slot = self._models[name]
        try:
            batch = decode_tensor(msg.data)
            if batch.ndim == 1:
                batch = batch.reshape(1, -1)
            probabilities, version = await slot.run(batch.astype(np.float32))
            reply = CloudInferReply(
                predictions=predictions_of(probabilities, version), model_version=version
            )
            self.served += 1
        except (SchemaError, ValueError) as exc:
            self.refused += 1
            reason = exc.reason if isinstance(exc, SchemaError) else str(exc)
            reply = CloudInferReply(status="error", error=reason[:500])
        except Exception as exc:  # onnxruntime's errors are untyped; answer, never crash
            self.refused += 1
            log.warning("cloud inference for %s failed: %s", name, exc)
            reply = CloudInferReply(status="error", error=f"inference failed: {exc}"[:500])
        if msg.reply:
            await msg.respond(encode(reply))
