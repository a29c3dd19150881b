"""Per-device windows of readings, by count or by time, and when each is due for inference."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipelines.settings import StreamingPipelineSettings


@dataclass(frozen=True)
class DueWindow:
    """A window ready for inference: a copy, so later readings do not change it."""

    device: str
    values: NDArray[np.float64]
    source_timestamp: float
    queued_at: float


class _DeviceWindow:
    def __init__(self, settings: StreamingPipelineSettings) -> None:
        self._settings = settings
        maxlen = None if settings.window_s is not None else settings.window
        self.values: deque[float] = deque(maxlen=maxlen)
        self.times: deque[float] = deque(maxlen=maxlen)
        self.since_last = 0
        self.last_due_at: float | None = None
        self.first_seen: float | None = None

    def add(self, value: float, timestamp: float) -> bool:
        """Add one reading; True when the window is due for an inference now."""
        s = self._settings
        if self.first_seen is None:
            self.first_seen = timestamp
        self.values.append(value)
        self.times.append(timestamp)
        self.since_last += 1
        if s.window_s is None:
            return len(self.values) >= s.window and self.since_last >= s.hop
        while self.times and self.times[0] < timestamp - s.window_s:
            self.times.popleft()
            self.values.popleft()
        if len(self.values) < 2:
            return False
        if s.hop_s is None:
            return self.since_last >= s.hop
        if self.last_due_at is None:
            # The first time window is due once the device has been heard for window_s.
            return timestamp - self.first_seen >= s.window_s
        return timestamp - self.last_due_at >= s.hop_s


class Windows:
    """Every device's window for one pipeline."""

    def __init__(self, settings: StreamingPipelineSettings) -> None:
        self._settings = settings
        self._devices: dict[str, _DeviceWindow] = {}

    def add(self, device: str, value: float, timestamp: float, now: float) -> DueWindow | None:
        """Add one reading; the due window when an inference should run now."""
        window = self._devices.get(device)
        if window is None:
            window = self._devices[device] = _DeviceWindow(self._settings)
        if not window.add(value, timestamp):
            return None
        window.since_last = 0
        window.last_due_at = timestamp
        return DueWindow(
            device=device,
            values=np.fromiter(window.values, dtype=np.float64, count=len(window.values)),
            source_timestamp=timestamp,
            queued_at=now,
        )

    def __len__(self) -> int:
        return len(self._devices)
