"""Configuration of the inference pipelines service."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipelines.offload_settings import OffloadSettings
from schemas.base import Name


class StreamingPipelineSettings(BaseModel):
    """One streaming pipeline: which readings, what window, which model, where results go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    device: Name | None = None
    property: Name
    window: int = Field(default=32, ge=2, le=4096)
    hop: int = Field(default=8, ge=1, description="readings between two inferences")
    model_path: Path | None = Field(
        default=None, description="ONNX file; None builds the project's anomaly model"
    )
    model_name: Name = "vibration-anomaly"
    model_version: str = "1"
    anomaly_threshold: float = Field(default=0.5, ge=0, le=1)
    intra_op_threads: int = Field(default=1, ge=1)


class PipelinesSettings(BaseModel):
    """Every pipeline of the edge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    streaming: list[StreamingPipelineSettings] = Field(default_factory=list)
    offload: OffloadSettings = OffloadSettings()
