"""Settings of the cloud learning service (composed into `edgefabric.config.CloudConfig`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from aggregator.triggers import DeployGate, Trigger
from schemas.base import Name


class LearningSettings(BaseModel):
    """Hard-example labelling and incremental retraining in the cloud.

    Attributes:
        enabled: run the service with the cloud.
        model: the edge model retrained and redeployed.
        edge_model: its deployed ONNX file (default: the bundled digits edge model).
        cloud_model: the deep model that auto-labels (default: the bundled digits cloud model).
        auto_label_confidence: the deep model's confidence needed to label without a person.
        trigger: when to retrain.
        gate: when to deploy.
        max_examples: most hard examples kept.
        max_bytes: most payload bytes kept.
        signing_key: Ed25519 private key (PEM, `edgefabric keys generate`) that signs every
            model the service deploys; edges trusting its public key refuse anything else.
            Without it updates go out unsigned.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    model: Name = "digits-edge"
    edge_model: Path | None = None
    cloud_model: Path | None = None
    auto_label_confidence: float = Field(default=0.95, gt=0.0, le=1.0)
    trigger: Trigger = Trigger()
    gate: DeployGate = DeployGate()
    max_examples: int = Field(default=100_000, ge=1)
    max_bytes: int = Field(default=1 << 30, ge=1)
    signing_key: Path | None = None
