"""The deep model in the cloud, served over NATS request-reply in a queue group.

Every replica subscribes `topics.cloud_infer(model)` in queue group
`topics.CLOUD_INFER_QUEUE`, so NATS hands each request to one replica: more replicas, more
throughput, no coordination. Requests are tensor frames; replies are `CloudInferReply` JSON.

Requests come from edges, possibly a compromised one, and the service answers every edge: a
request that is too large (checked before parsing), not a tensor frame, not a finite
(batch, features) or (features,) tensor, or that the model refuses gets an error reply (when
it has a reply subject) and a dead letter on ``ef.cloud.dead-letter.cloud-inference``, and the
service keeps serving.
"""

from __future__ import annotations

import contextlib
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
from cloud_bridge.dead_letters import CloudDeadLetters
from cloud_bridge.errors import NATS_ERRORS
from pipelines.model_slot import ModelSlot
from schemas import topics
from schemas.codec import encode
from schemas.errors import SchemaError
from schemas.inference import Prediction
from schemas.tensor import decode_tensor

log = logging.getLogger(__name__)

_INBOX = "_INBOX."
"""Replies go only to request inboxes (the hub forwards `_INBOX.{edge}.>` to that edge alone)."""

SERVICE = "cloud-inference"
MAX_REQUEST_BYTES = 1 << 20
"""The hub's default max payload: nothing larger can arrive, and nothing larger is parsed."""


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
        max_request_bytes: larger requests are refused before they are parsed.
    """

    def __init__(
        self,
        nats_url: str,
        models: Mapping[str, ModelSlot],
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self._url = nats_url
        self._models = dict(models)
        self._max_request_bytes = max_request_bytes
        self._nc: NatsClient | None = None
        self._subs: list[Subscription] = []
        self.served = 0
        self.refused = 0
        self.dead_letters = CloudDeadLetters(SERVICE, lambda: self._nc)

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

    def _batch(self, data: bytes) -> np.ndarray:
        """The request's inputs as a float32 (batch, features) array.

        Raises:
            SchemaError: too large, not a tensor frame, not 1-D or 2-D, empty, or not finite.

        """
        if len(data) > self._max_request_bytes:
            raise SchemaError(f"request of {len(data)} bytes, at most {self._max_request_bytes}")
        batch = decode_tensor(data)
        if batch.ndim == 1:
            batch = batch.reshape(1, -1)
        if batch.ndim != 2 or batch.size == 0:  # (batch, features)
            raise SchemaError(f"tensor of shape {batch.shape}: (batch, features) expected")
        with np.errstate(over="ignore", invalid="ignore"):  # float64 past float32: inf, refused
            inputs = batch.astype(np.float32)
        if not np.all(np.isfinite(inputs)):
            raise SchemaError("tensor holds nan or inf (or values past float32's range)")
        return inputs

    async def _handle(self, msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[-1]
        slot = self._models[name]
        if msg.reply and not msg.reply.startswith(_INBOX):
            # Permissions check the subject an edge publishes to, never its reply subject, and
            # this service answers as the unconfined cloud user: answering on `ef.up.B...` or
            # `ef.down.all...` would publish, for a confined edge, where it may not.
            await self._refuse(msg, f"reply subject {msg.reply[:80]!r} is not an inbox")
            return
        try:
            probabilities, version = await slot.run(self._batch(msg.data))
            reply = CloudInferReply(
                predictions=predictions_of(probabilities, version), model_version=version
            )
            self.served += 1
        except (SchemaError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, SchemaError) else str(exc)
            reply = await self._refuse(msg, reason)
        except Exception as exc:  # onnxruntime's errors are untyped; answer, never crash
            reply = await self._refuse(msg, f"inference failed: {exc}")
        if msg.reply:
            with contextlib.suppress(*NATS_ERRORS):
                await msg.respond(encode(reply))

    async def _refuse(self, msg: Msg, reason: str) -> CloudInferReply:
        self.refused += 1
        await self.dead_letters(msg.subject, msg.data, reason[:500])
        return CloudInferReply(status="error", error=reason[:500])
