"""The edge trainer: trains on the edge's own data (which never leaves it), sends its update.

It reads global-model frames from an `EdgeLink` (on a real edge: the retained
``ef/fl/{job}/global`` the bridge delivers), trains from them in a worker thread, and answers
with a `FitUpdate` frame carrying its weights and sample count (``ef/fl/{job}/update``, which
the bridge carries up in the control class). A frame for a round it already answered, or one
that does not sample it, is skipped; the final global model is kept as `final_weights`.

A global frame that cannot be trained on — not a frame, another job's, an implausible round,
weights that are not a float32 [W, b] chain from the local features to the 10 classes, or
training that diverges to nan/inf — is refused: `EdgeLink.refuse` reports it (on a real edge
a dead letter on ``ef/dead-letter/fl-trainer``) and the trainer waits for the next global.

Given `trusted` keys, the trainer also refuses, the same way and before it parses the weights,
every global (final ones included) that a trusted key did not sign exactly as received:
unsigned, signed by another key, any header field or weights byte changed, or a signed header
moved to another job or round (`schemas.federated.decode_fit`). Without keys it trains on
unsigned globals, as the demo does.

`Behaviour` exists for tests and the bench: a dead edge (never answers), and two attackers
(weights scaled by a large negative factor, or random weights).
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from aggregator.strategies import Weights
from aggregator.trainer import TrainConfig, accuracy, local_train
from aggregator.transport import EdgeLink
from pipelines.digits import CLASSES
from schemas.errors import SchemaError
from schemas.federated import (
    FitInstruction,
    FitUpdate,
    GlobalModelRefused,
    decode_fit,
    encode_update,
)
from schemas.signing import TrustedKeys

log = logging.getLogger(__name__)

MAX_ROUND = 100_000
"""`JobConfig.rounds`' upper bound: a later round is forged, and would make every real round
after it look stale to this trainer."""


def check_layout(weights: Weights, features: int) -> None:
    """Refuse weights `local_train` cannot start from: a [W, b] chain `features` -> 10 classes.

    Raises:
        SchemaError: the reason names the first layer that does not fit.
    """
    if not weights or len(weights) % 2:
        raise SchemaError(f"{len(weights)} layers: expected [W, b] pairs")
    width = features
    for i in range(0, len(weights), 2):
        w, b = weights[i], weights[i + 1]
        if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
            raise SchemaError(
                f"layer {i}: W {list(w.shape)} and b {list(b.shape)} do not take {width} inputs"
            )
        width = int(w.shape[1])
    if width != CLASSES:
        raise SchemaError(f"the model ends in {width} outputs, {CLASSES} classes expected")


class Behaviour(StrEnum):
    """How a (simulated) edge answers."""

    HONEST = "honest"
    DEAD = "dead"
    SCALED = "scaled"
    RANDOM = "random"


class EdgeTrainer:
    """One edge's participant in federated jobs.

    Args:
        edge: this edge's id.
        link: where globals come from and updates go.
        x: local features (float32 [N, 64], 0..1); never sent anywhere.
        y: local labels.
        trusted: the cloud keys globals must be signed by; None accepts unsigned globals
            (an empty `TrustedKeys` accepts none).

    """

    def __init__(
        self,
        *,
        edge: str,
        link: EdgeLink,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        behaviour: Behaviour = Behaviour.HONEST,
        seed: int = 0,
        trusted: TrustedKeys | None = None,
    ) -> None:
        self.edge = edge
        self.behaviour = behaviour
        self.rounds_answered = 0
        self.refused = 0
        self.final_weights: Weights | None = None
        self._link = link
        self._x = x
        self._y = y
        self._seed = seed
        self._trusted = trusted
        self._last_round = -1

    async def run(self) -> None:
        """Answer every round this edge is sampled for, until cancelled."""
        async for frame in self._link.globals():
            try:
                instruction, weights = self._read(frame)
            except (SchemaError, GlobalModelRefused) as exc:
                await self._refuse(frame, exc.reason)
                continue
            if instruction.final:
                self.final_weights = weights
                continue
            if instruction.round <= self._last_round:
                continue
            if instruction.participants and self.edge not in instruction.participants:
                continue
            self._last_round = instruction.round
            if self.behaviour is Behaviour.DEAD:
                continue
            frame_out = await asyncio.to_thread(self._fit, instruction, weights)
            if frame_out is None:
                await self._refuse(frame, "local training diverged (nan or inf weights)")
                continue
            await self._link.send_update(frame_out)
            self.rounds_answered += 1

    def _read(self, frame: bytes) -> tuple[FitInstruction, Weights]:
        instruction, weights = decode_fit(frame, trusted=self._trusted)
        if instruction.job != self._link.job:
            raise SchemaError(f"a global of job {instruction.job!r} on {self._link.job!r}'s topic")
        if instruction.round > MAX_ROUND:
            raise SchemaError(f"round {instruction.round} is past the last possible {MAX_ROUND}")
        check_layout(weights, int(self._x.shape[1]))
        return instruction, weights

    async def _refuse(self, frame: bytes, reason: str) -> None:
        self.refused += 1
        log.warning("edge %s: global model refused: %s", self.edge, reason)
        await self._link.refuse(frame, reason)

    def _fit(self, instruction: FitInstruction, weights: Weights) -> bytes | None:
        """Train and encode the update; None when training left non-finite weights."""
        s = instruction.train
        config = TrainConfig(
            epochs=s.epochs, lr=s.lr, batch=s.batch, l2=s.l2, proximal_mu=s.proximal_mu
        )
        seed = self._seed * 100_003 + instruction.round
        with np.errstate(all="ignore"):  # a huge lr overflows; the result is checked below
            trained = local_train(weights, self._x, self._y, config, seed=seed)
            if not all(np.all(np.isfinite(w)) for w in trained):
                return None
            trained = self._attack(weights, trained, seed)
            metrics = {"train_accuracy": accuracy(trained, self._x, self._y)}
        update = FitUpdate(
            job=instruction.job,
            round=instruction.round,
            edge=self.edge,
            instruction=instruction.message_id,
            num_examples=len(self._y),
            metrics=metrics,
        )
        return encode_update(update, trained)

    def _attack(self, start: Weights, trained: Weights, seed: int) -> Weights:
        if self.behaviour is Behaviour.SCALED:
            return [
                (s + -10.0 * (t - s)).astype(np.float32)
                for s, t in zip(start, trained, strict=True)
            ]
        if self.behaviour is Behaviour.RANDOM:
            rng = np.random.default_rng(seed)
            return [rng.normal(0.0, 5.0, t.shape).astype(np.float32) for t in trained]
        return trained
