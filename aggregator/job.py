"""A federated job's configuration and the record each round leaves behind.

The knobs are Flower's (``fraction_fit``, ``min_fit_clients``, ``min_available_clients``,
``round_timeout``, ``accept_failures``) with one difference that matters at the edge: every wait
is bounded. Flower waits without limit for ``min_available_clients``; Sedna waits for every
client forever. Here a round lasts at most ``round_timeout_s`` and then closes with whoever
answered: aggregated when at least ``min_fit_clients`` did (and, unless ``accept_failures``,
nobody sampled was missing), failed otherwise, and the `RoundRecord` says which and why.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import Name
from schemas.federated import TrainSettings


class JobConfig(BaseModel):
    """One federated job.

    Attributes:
        job: the job's name (a topic and subject token).
        model: the model the weights belong to (``digits-softmax`` or ``digits-mlp-<hidden>``).
        hidden: hidden units of the model (0: softmax regression).
        edges: the edges enrolled in the job; the ones available are sampled each round.
        rounds: exit after this many rounds at the latest.
        target_accuracy: exit earlier once the evaluated accuracy reaches it.
        fraction_fit: share of the available edges sampled per round.
        min_fit_clients: fewest answers a round may aggregate.
        min_available_clients: fewest enrolled edges for the job to start at all.
        round_timeout_s: how long a round waits for answers, at most.
        accept_failures: aggregate even though some sampled edges did not answer.
        strategy: a name in `aggregator.strategies.STRATEGIES`.
        strategy_options: its keyword options (Flower's defaults otherwise).
        train: local training settings sent to the edges with the global model.
        seed: the sampling seed (rounds are reproducible).
        max_failed_rounds: stop after this many skipped rounds in a row.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    job: Name
    model: Name = "digits-softmax"
    hidden: int = Field(default=0, ge=0, le=1_000_000)
    edges: list[Name] = Field(min_length=1, max_length=10_000)
    rounds: int = Field(default=20, ge=1, le=100_000)
    target_accuracy: float | None = Field(default=None, gt=0.0, le=1.0)
    fraction_fit: float = Field(default=1.0, gt=0.0, le=1.0)
    min_fit_clients: int = Field(default=2, ge=1)
    min_available_clients: int = Field(default=2, ge=1)
    round_timeout_s: float = Field(default=30.0, gt=0.0)
    accept_failures: bool = True
    strategy: str = "fedavg"
    strategy_options: dict[str, float] = Field(default_factory=dict)
    train: TrainSettings = TrainSettings()
    seed: int = 0
    max_failed_rounds: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> JobConfig:
        if self.min_fit_clients > len(self.edges):
            raise ValueError(
                f"min_fit_clients={self.min_fit_clients} exceeds the {len(self.edges)} edges"
            )
        return self


class RoundRecord(BaseModel):
    """What one round did: who was asked, who answered, what was aggregated, how well.

    `status` is ``completed`` when the round's answers were aggregated (all of them, or, after
    the timeout, enough of them: `missing` names the rest) and ``failed`` when too few came
    in time (the global model is then unchanged); `reason` says it in words.
    """

    model_config = ConfigDict(frozen=True)

    round: int
    status: Literal["completed", "failed"]
    reason: str
    sampled: list[str]
    answered: list[str]
    missing: list[str]
    rejected: dict[str, str] = Field(default_factory=dict)
    late: int = 0
    accuracy: float | None = None
    duration_s: float
