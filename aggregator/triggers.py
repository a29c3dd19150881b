"""Retraining triggers and the deploy gate (pure configuration and logic, light to import).

See `aggregator.incremental` for how they are used.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Operator = Literal[">", ">=", "=", "!=", "<=", "<"]
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    "<": operator.lt,
}


class Trigger(BaseModel):
    """When to retrain (Sedna's ``trigger``: condition AND timer, plus staleness)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operator: Operator = ">"
    num_of_samples: int = Field(default=500, ge=0)
    window: tuple[dt.time, dt.time] | None = None
    staleness_s: float | None = Field(default=None, gt=0)

    def in_window(self, now: dt.datetime) -> bool:
        """True when `now` is inside the daily window (which may wrap past midnight)."""
        if self.window is None:
            return True
        start, end, t = self.window[0], self.window[1], now.time()
        return start <= t < end if start <= end else (t >= start or t < end)

    def decide(self, new_samples: int, now: float, deployed_at: float) -> str | None:
        """Why to retrain now, or None. Never with zero new samples (nothing to learn)."""
        if new_samples <= 0 or not self.in_window(dt.datetime.fromtimestamp(now)):
            return None
        if _OPS[self.operator](new_samples, self.num_of_samples):
            return f"num_of_samples {new_samples} {self.operator} {self.num_of_samples}"
        if self.staleness_s is not None and now - deployed_at >= self.staleness_s:
            return f"stale: deployed {now - deployed_at:.0f} s ago, {new_samples} new samples"
        return None

    def next_change(self, now: float, deployed_at: float) -> float | None:
        """The next moment `decide` may answer differently with no new label, or None."""
        moments = []
        if self.staleness_s is not None and deployed_at + self.staleness_s > now:
            moments.append(deployed_at + self.staleness_s)
        if self.window is not None:
            today = dt.datetime.fromtimestamp(now)
            opens = dt.datetime.combine(today.date(), self.window[0])
            if opens.timestamp() <= now:
                opens += dt.timedelta(days=1)
            moments.append(opens.timestamp())
        return min(moments) if moments else None


class DeployGate(BaseModel):
    """When a retrained model may replace the deployed one (Sedna's ``deploy`` condition)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operator: Operator = ">"
    accuracy_delta: float = 0.0
    min_eval_size: int = Field(default=50, ge=1)

    def judge(self, old: float, new: float, eval_size: int) -> tuple[bool, str]:
        """(deploy?, why) for held-out accuracies `old` -> `new` over `eval_size` samples."""
        delta = new - old
        if eval_size < self.min_eval_size:
            return False, f"eval set of {eval_size} < min_eval_size {self.min_eval_size}"
        if not _OPS[self.operator](delta, self.accuracy_delta):
            return False, f"accuracy_delta {delta:+.4f} not {self.operator} {self.accuracy_delta}"
        if delta <= 0:
            return False, f"accuracy_delta {delta:+.4f}: never deploy a model that is not better"
        return True, f"accuracy_delta {delta:+.4f} {self.operator} {self.accuracy_delta}"
