"""Hard-example mining: Sedna's filters, with its names and defaults, minus its edge cases.

Each filter takes one sample's model output and says whether the sample is *hard* (the edge
should not trust itself: ask the cloud, keep the sample for labelling) and why.

* `Threshold(threshold=0.5)`: hard if the mean score < threshold. Scores are detection box
  scores, or for a classifier the top class probability.
* `CrossEntropy(threshold_cross_entropy=0.5)`: confidence = 1 + Σ pᵢ ln pᵢ / ln K over the
  K class probabilities; hard if confidence < threshold. Sedna crashes on p = 0 (ln 0) and
  divides by zero for K = 1; here p ln p is taken as 0 at p = 0, and one class is certain.
* `IBT(threshold_img=0.5, threshold_box=0.5)`: hard if the share of boxes scoring
  ≤ threshold_box is ≥ 1 - threshold_img.
* `Random(random_ratio=0.3)`: hard with that probability (seeded, for reproducible runs).
* `CloudOnly` / `EdgeOnly`: always / never hard.

An empty output is hard for every filter but EdgeOnly: the edge model said nothing, so the
cloud should decide (Sedna returns a mix of True and False here).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class HardExampleFilter(Protocol):
    """Decides whether one sample's output is a hard example."""

    @property
    def name(self) -> str:
        """Sedna's name of the filter."""
        ...

    @property
    def wants(self) -> Literal["probabilities", "scores"]:
        """What the filter reads: a classifier's class probabilities, or detection scores.

        A classifier's output becomes one score, its top probability, for the score filters.
        """
        ...

    def __call__(self, scores: Sequence[float]) -> tuple[bool, str]:
        """(is hard, the reason in a few words)."""
        ...


def _valid(scores: Sequence[float]) -> bool:
    return all(0.0 <= s <= 1.0 and not math.isnan(s) for s in scores)


@dataclass(frozen=True)
class Threshold:
    """Hard if the mean score is below `threshold`."""

    threshold: float = 0.5
    name: str = "Threshold"
    wants: Literal["probabilities", "scores"] = "scores"

    def __call__(self, scores: Sequence[float]) -> tuple[bool, str]:
        if not scores:
            return True, "empty output"
        mean = sum(scores) / len(scores)
        return mean < self.threshold, f"mean score {mean:.3f} vs {self.threshold}"


@dataclass(frozen=True)
class CrossEntropy:
    """Hard if the normalised entropy-based confidence is below the threshold."""

    threshold_cross_entropy: float = 0.5
    name: str = "CrossEntropy"
    wants: Literal["probabilities", "scores"] = "probabilities"

    @staticmethod
    def confidence(probabilities: Sequence[float]) -> float:
        """1 + Σ p ln p / ln K: 1 for a one-hot output, 0 for a uniform one."""
        k = len(probabilities)
        if k <= 1:
            return 1.0
        plogp = sum(p * math.log(p) for p in probabilities if p > 0.0)
        return 1.0 + plogp / math.log(k)

    def __call__(self, scores: Sequence[float]) -> tuple[bool, str]:
        if not scores:
            return True, "empty output"
        if not _valid(scores):
            return True, "probabilities outside [0, 1]"
        confidence = self.confidence(scores)
        return (
            confidence < self.threshold_cross_entropy,
            f"confidence {confidence:.3f} vs {self.threshold_cross_entropy}",
        )


@dataclass(frozen=True)
class IBT:
    """Image-box-threshold: hard if enough of the boxes are weak."""

    threshold_img: float = 0.5
    threshold_box: float = 0.5
    name: str = "IBT"
    wants: Literal["probabilities", "scores"] = "scores"

    def __call__(self, scores: Sequence[float]) -> tuple[bool, str]:
        if not scores:
            return True, "empty output"
        weak = sum(1 for s in scores if s <= self.threshold_box) / len(scores)
        return weak >= 1 - self.threshold_img, f"{weak:.0%} of boxes <= {self.threshold_box}"


@dataclass
class Random:
    """Hard with probability `random_ratio`."""

    random_ratio: float = 0.3
    seed: int | None = None
    name: str = "Random"
    wants: Literal["probabilities", "scores"] = "scores"
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def __call__(self, scores: Sequence[float]) -> tuple[bool, str]:
        return self._rng.random() < self.random_ratio, f"sampled at {self.random_ratio:.0%}"


@dataclass(frozen=True)
class CloudOnly:
    """Every sample goes to the cloud."""

    name: str = "CloudOnly"
    wants: Literal["probabilities", "scores"] = "scores"

    def __call__(self, scores: Sequence[float]) -> tuple[bool, str]:
        return True, "cloud only"


@dataclass(frozen=True)
class EdgeOnly:
    """No sample goes to the cloud."""

    name: str = "EdgeOnly"
    wants: Literal["probabilities", "scores"] = "scores"

    def __call__(self, scores: Sequence[float]) -> tuple[bool, str]:
        return False, "edge only"


class HemSettings(BaseModel):
    """Which filter and its parameters, as the edge config names them (Sedna's names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["Threshold", "CrossEntropy", "IBT", "Random", "CloudOnly", "EdgeOnly"] = (
        "CrossEntropy"
    )
    threshold: float = Field(default=0.5, ge=0, le=1)
    threshold_cross_entropy: float = Field(default=0.5, ge=0, le=1)
    threshold_img: float = Field(default=0.5, ge=0, le=1)
    threshold_box: float = Field(default=0.5, ge=0, le=1)
    random_ratio: float = Field(default=0.3, ge=0, le=1)
    seed: int | None = None

    def build(self) -> HardExampleFilter:
        """The configured filter."""
        match self.method:
            case "Threshold":
                return Threshold(self.threshold)
            case "CrossEntropy":
                return CrossEntropy(self.threshold_cross_entropy)
            case "IBT":
                return IBT(self.threshold_img, self.threshold_box)
            case "Random":
                return Random(self.random_ratio, seed=self.seed)
            case "CloudOnly":
                return CloudOnly()
            case _:
                return EdgeOnly()
