"""Feature extraction for streaming pipelines: a window of readings -> one model input row.

Kinds, concatenated in the order configured:

* ``raw``: the window itself (count windows only: a time window has no fixed length);
* ``stats``: mean, standard deviation, minimum, maximum, RMS, peak-to-peak (6 values);
* ``fft_bands``: the energy of the (mean-removed) window in `bands` equal-width frequency
  bands, DC excluded. Energies are |X_k|^2 / n^2 (Parseval), so they sum to about the window's
  variance whatever the window length, and a time window's varying count does not change
  their scale. Vibration faults show up as energy moving between bands.

Normalisation, when configured, is ``(features - mean) / std`` with one value for every
feature or one per feature; the model sees that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Self

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

FeatureKind = Literal["raw", "stats", "fft_bands"]
STATS = ("mean", "std", "min", "max", "rms", "peak_to_peak")


def _raw() -> list[FeatureKind]:
    return ["raw"]


class FeatureSettings(BaseModel):
    """Which features a pipeline computes, and how they are normalised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kinds: list[FeatureKind] = Field(default_factory=_raw, min_length=1)
    bands: int = Field(default=4, ge=1, le=256, description="FFT bands for fft_bands")
    normalise_mean: list[float] = Field(
        default_factory=list, description="subtracted: empty = 0, one value, or one per feature"
    )
    normalise_std: list[float] = Field(
        default_factory=list, description="divided by: empty = 1, one value, or one per feature"
    )

    @model_validator(mode="after")
    def _std_positive(self) -> Self:
        if any(s <= 0 for s in self.normalise_std):
            raise ValueError("normalise_std values must be > 0")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"feature kinds repeat: {self.kinds}")
        return self


def feature_length(settings: FeatureSettings, window: int) -> int:
    """How many values `extract` returns for a count window of `window` readings."""
    sizes = {"raw": window, "stats": len(STATS), "fft_bands": settings.bands}
    return sum(sizes[kind] for kind in settings.kinds)


def _stats(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.array(
        [
            x.mean(),
            x.std(),
            x.min(),
            x.max(),
            np.sqrt(np.mean(x * x)),
            x.max() - x.min(),
        ]
    )


def band_energies(x: NDArray[np.float64], bands: int) -> NDArray[np.float64]:
    """Energy of `x` (mean removed) in `bands` equal-width bands above DC."""
    n = len(x)
    spectrum = np.fft.rfft(x - x.mean())
    power = (np.abs(spectrum[1:]) ** 2) / (n * n)
    # rfft holds each frequency once; its negative twin carries the same energy, except at
    # Nyquist (even n), which has no twin.
    power *= 2.0
    if n % 2 == 0 and len(power):
        power[-1] /= 2.0
    return np.array([chunk.sum() for chunk in np.array_split(power, bands)], dtype=np.float64)


class FeatureExtractor:
    """Turns windows into normalised float32 feature rows (pure numpy; safe in any thread)."""

    def __init__(self, settings: FeatureSettings) -> None:
        self.settings = settings
        self._mean = np.asarray(settings.normalise_mean or [0.0], dtype=np.float64)
        self._std = np.asarray(settings.normalise_std or [1.0], dtype=np.float64)

    def check(self, length: int) -> None:
        """Refuse normalisation vectors that do not fit `length` features.

        Raises:
            ValueError: a vector has neither one value nor `length` values.
        """
        for what, vector in (("normalise_mean", self._mean), ("normalise_std", self._std)):
            if len(vector) not in (1, length):
                raise ValueError(f"{what} has {len(vector)} values; the features have {length}")

    def extract(self, window: Sequence[float] | NDArray[np.floating]) -> NDArray[np.float32]:
        """The feature row of one window."""
        x = np.asarray(window, dtype=np.float64)
        parts: list[NDArray[np.float64]] = []
        for kind in self.settings.kinds:
            if kind == "raw":
                parts.append(x)
            elif kind == "stats":
                parts.append(_stats(x))
            else:
                parts.append(band_energies(x, self.settings.bands))
        row = np.concatenate(parts)
        return ((row - self._mean) / self._std).astype(np.float32)

    def extract_many(self, windows: NDArray[np.floating]) -> NDArray[np.float32]:
        """Feature rows of many equal-length windows (rows of `windows`)."""
        return np.stack([self.extract(w) for w in windows])
