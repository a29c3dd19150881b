"""Configuration of the inference pipelines service."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from pipelines.features import FeatureSettings
from pipelines.offload_settings import OffloadSettings
from schemas.base import Name, check_name

_GLOB = "*?["


def _pattern(value: str) -> str:
    # A glob is matched here, never sent to the broker: what is left without the glob
    # characters must still be a valid name, so no MQTT wildcard or separator slips in.
    plain = "".join(ch for ch in value if ch not in _GLOB + "]")
    check_name(plain or "x")
    return value


Pattern = Annotated[str, AfterValidator(_pattern)]
"""A device or property name, or a glob over names (``plc-*``, ``vib?``)."""


def is_glob(value: str | None) -> bool:
    """True when `value` is a glob pattern rather than one name."""
    return value is not None and any(ch in value for ch in _GLOB)


class StreamingPipelineSettings(BaseModel):
    """One streaming pipeline: which readings, what window, which model, where results go.

    Only `name` and `property` are required: the defaults build the project's anomaly model
    over raw windows of 32 readings, one inference every 8 readings per device.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    device: Pattern | None = Field(default=None, description="device name or glob; None = any")
    property: Pattern = Field(description="property name or glob")
    window: int = Field(default=32, ge=2, le=4096, description="readings per count window")
    hop: int = Field(default=8, ge=1, description="readings between two inferences")
    window_s: float | None = Field(
        default=None, gt=0, le=3600, description="time window in seconds instead of a count"
    )
    hop_s: float | None = Field(default=None, gt=0, description="seconds between inferences")
    features: FeatureSettings = FeatureSettings()
    model_path: Path | None = Field(
        default=None, description="ONNX file; None builds the project's anomaly model"
    )
    model_name: Name = "vibration-anomaly"
    model_version: str = "1"
    input_name: str | None = Field(default=None, description="None = the model's first input")
    output_names: list[str] = Field(default_factory=list, description="empty = every output")
    score_output: str | None = Field(
        default="anomaly", description="output read as the score; None = the first output"
    )
    anomaly_threshold: float = Field(default=0.5, ge=0, le=1)
    labels: tuple[str, str] = ("normal", "anomaly")
    class_labels: list[str] = Field(
        default_factory=list, description="names of classes when the score output is a vector"
    )
    result_pipeline: Name | None = Field(
        default=None, description="results go to ef/results/{result_pipeline or name}/{device}"
    )
    intra_op_threads: int = Field(default=1, ge=1)
    max_batch: int = Field(default=32, ge=1, le=4096, description="windows per inference call")
    batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="extra wait for more windows to batch; 0 = batch only what is queued",
    )
    latency_budget_ms: float = Field(
        default=20.0,
        gt=0,
        description="a batch is sized so that its inference fits in this (measured per row)",
    )
    queue_size: int = Field(default=1024, ge=1, description="windows waiting (drop oldest)")

    @model_validator(mode="after")
    def _windows_fit(self) -> Self:
        if self.window_s is not None and "raw" in self.features.kinds:
            raise ValueError(
                "features: 'raw' needs a count window (a time window has no fixed length); "
                "use stats and/or fft_bands with window_s"
            )
        if self.hop_s is not None and self.window_s is None:
            raise ValueError("hop_s needs window_s")
        return self

    def matches(self, device: str, prop: str) -> bool:
        """Whether a reading of `device`/`prop` belongs to this pipeline."""
        dev_ok = self.device is None or fnmatch.fnmatchcase(device, self.device)
        return dev_ok and fnmatch.fnmatchcase(prop, self.property)


class ModelUpdateSettings(BaseModel):
    """How the edge takes model updates from the cloud."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    trusted_keys: list[Path] = Field(
        default_factory=list, description="PEM public keys; empty = accept unsigned updates"
    )
    max_model_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    validation_samples: int = Field(default=32, ge=1, le=1024)


class PipelinesSettings(BaseModel):
    """Every pipeline of the edge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    streaming: list[StreamingPipelineSettings] = Field(default_factory=list)
    offload: OffloadSettings = OffloadSettings()
    updates: ModelUpdateSettings = ModelUpdateSettings()
