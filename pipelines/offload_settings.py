"""Configuration of inference offload and joint inference."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipelines.hard_examples import HardExampleBudget
from pipelines.hem import HemSettings
from schemas.base import Name


class OffloadModelSettings(BaseModel):
    """One model clients may offload to, and how it works with the cloud.

    `model_path=None` uses the project's digits edge model shipped in `pipelines/models`;
    `cloud_model=None` answers at the edge only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name = "digits"
    edge_model: Name = Field(
        default="digits-edge", description="the edge model's name for model updates and status"
    )
    model_path: Path | None = None
    version: str = "1"
    cloud_model: Name | None = "digits-cloud"
    hem: HemSettings = HemSettings()
    deadline_ms: float = Field(default=15.0, gt=0, le=10_000)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_reset_s: float = Field(default=2.0, gt=0)
    hard_examples: HardExampleBudget = HardExampleBudget()
    intra_op_threads: int = Field(default=1, ge=1)


class OffloadSettings(BaseModel):
    """The offload service: which models, how many requests in flight at once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: list[OffloadModelSettings] = Field(default_factory=list)
    concurrency: int = Field(default=64, ge=1, le=10_000)
