"""Errors of the learning services (federated rounds, hard examples, incremental training)."""

from __future__ import annotations

from schemas.errors import EdgefabricError


class LearningError(EdgefabricError):
    """Base of every error raised by `aggregator`."""


class AggregationError(LearningError):
    """Updates could not be aggregated (none, mismatched shapes, too few for the strategy).

    Attributes:
        strategy: the strategy that refused.
        reason: why.

    """

    def __init__(self, strategy: str, reason: str) -> None:
        super().__init__(f"{strategy}: {reason}")
        self.strategy = strategy
        self.reason = reason


class JobFailed(LearningError):
    """A federated job stopped early: a round did not get enough updates in time.

    Attributes:
        job: the job's name.
        round: the round that failed.
        reason: what the round record says.

    """

    def __init__(self, job: str, round_number: int, reason: str) -> None:
        super().__init__(f"job {job} round {round_number}: {reason}")
        self.job = job
        self.round = round_number
        self.reason = reason


class LabelNotFound(LearningError):
    """`edgefabric label set` named an example the store does not have."""

    def __init__(self, example_id: str) -> None:
        super().__init__(f"no hard example {example_id!r}")
        self.example_id = example_id
