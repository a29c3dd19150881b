"""Joint inference: the edge model answers, hard samples also ask the cloud's deep model.

Every sample is answered by the edge model first. When the hard-example filter says the edge
should not trust itself, the cloud model is asked over NATS request-reply, within what is
left of the sample's deadline. A late, failing or unreachable cloud never delays the answer
past the deadline: the edge's own result is returned, the circuit breaker counts the failure
and, once open, stops asking until the cloud recovers. Hard samples are kept as hard examples
whatever the cloud did.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import nats.errors
import numpy as np
from nats.aio.client import Client as NatsClient
from numpy.typing import NDArray

from pipelines.breaker import CircuitBreaker
from pipelines.cloud_inference import CloudInferReply, predictions_of
from pipelines.hem import HardExampleFilter
from pipelines.model_slot import ModelSlot
from schemas import topics
from schemas.codec import decode
from schemas.errors import SchemaError
from schemas.inference import JointAnswer, Prediction
from schemas.tensor import encode_tensor


class CloudModelClient:
    """Asks the cloud's deep model (any replica of its queue group) for predictions."""

    def __init__(self, nc: NatsClient, model: str) -> None:
        self._nc = nc
        self._subject = topics.cloud_infer(model)

    async def predict(self, sample: NDArray[np.float32], timeout: float) -> Prediction:
        """The cloud's prediction for one sample.

        Raises:
            TimeoutError: no answer within `timeout` (or no responder, link down).
            SchemaError: the cloud answered with an error or an unreadable reply.
        """
        try:
            reply = await self._nc.request(
                self._subject, encode_tensor(sample.reshape(1, -1)), timeout=timeout
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise TimeoutError(str(exc) or type(exc).__name__) from exc
        except nats.errors.Error as exc:  # connection closed or reconnecting
            raise TimeoutError(str(exc)) from exc
        answer = decode(CloudInferReply, reply.data)
        if answer.status != "ok" or len(answer.predictions) != 1:
            raise SchemaError(f"cloud model refused: {answer.error or 'no prediction'}")
        return answer.predictions[0]


@dataclass
class JointCounters:
    """What joint inference did, for status and benches."""

    samples: int = 0
    hard: int = 0
    cloud_answers: int = 0
    cloud_timeouts: int = 0
    cloud_errors: int = 0
    breaker_skips: int = 0


class JointInference:
    """Edge model + hard-example filter + (optional) cloud model under a deadline.

    Args:
        edge: the edge model's slot (hot-swappable).
        hem: the hard-example filter.
        cloud: client of the cloud model; None means edge only.
        deadline_s: budget per sample for the whole answer, cloud call included.
        breaker: shared by every call to this cloud model.
    """

    def __init__(
        self,
        edge: ModelSlot,
        *,
        hem: HardExampleFilter,
        cloud: CloudModelClient | None,
        deadline_s: float = 0.015,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.edge = edge
        self.hem = hem
        self.cloud = cloud
        self.deadline_s = deadline_s
        self.breaker = breaker or CircuitBreaker()
        self.counters = JointCounters()

    async def answer(self, sample: NDArray[np.float32]) -> JointAnswer:
        """Answer one sample (shape [features]) within the deadline."""
        started = time.monotonic()
        probabilities, version = await self.edge.run(sample.reshape(1, -1))
        (edge_result,) = predictions_of(probabilities, version)
        scores = (
            edge_result.probabilities
            if self.hem.wants == "probabilities"
            else [edge_result.confidence]
        )
        hard, reason = self.hem(scores)
        self.counters.samples += 1
        if not hard:
            return JointAnswer(
                is_hard_example=False, final_result=edge_result, edge_result=edge_result
            )
        self.counters.hard += 1
        cloud_result, skipped = await self._ask_cloud(sample, started)
        return JointAnswer(
            is_hard_example=True,
            final_result=cloud_result or edge_result,
            edge_result=edge_result,
            cloud_result=cloud_result,
            cloud_skipped=skipped,
            hard_reason=f"{self.hem.name}: {reason}",
        )

    async def _ask_cloud(
        self, sample: NDArray[np.float32], started: float
    ) -> tuple[Prediction | None, str | None]:
        if self.cloud is None:
            return None, "edge only"
        if not self.breaker.allow():
            self.counters.breaker_skips += 1
            return None, "circuit open"
        remaining = self.deadline_s - (time.monotonic() - started)
        if remaining <= 0:
            self.counters.cloud_timeouts += 1
            return None, "deadline spent at the edge"
        try:
            async with asyncio.timeout(remaining):
                result = await self.cloud.predict(sample, timeout=remaining)
        except TimeoutError:
            self.breaker.failure()
            self.counters.cloud_timeouts += 1
            return None, "cloud timeout"
        except SchemaError:
            self.breaker.failure()
            self.counters.cloud_errors += 1
            return None, "cloud error"
        self.breaker.success()
        self.counters.cloud_answers += 1
        return result, None
