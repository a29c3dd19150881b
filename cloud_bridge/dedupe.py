"""Exactly-once delivery at the cloud consumer, for outages longer than any dedupe window.

JetStream drops a re-published message only while its `Nats-Msg-Id` is inside the stream's
duplicate window. The bridge stamps every message with its edge queue sequence, and forwards
in order, so the cloud can remember, per edge, the contiguous prefix it has seen plus the few
sequences seen beyond a gap: that is exact however long the outage, in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _EdgeProgress:
    floor: int = 0
    beyond: set[int] = field(default_factory=set)


class EdgeSequenceTracker:
    """Remembers which edge sequences were delivered, per edge.

    Args:
        max_gaps: sequences tracked above the contiguous floor per edge before the floor is
            moved up (a gap that never fills means the edge dropped those messages on purpose,
            e.g. hard examples evicted by their class limit).

    """

    def __init__(self, *, max_gaps: int = 100_000) -> None:
        self._edges: dict[str, _EdgeProgress] = {}
        self._max_gaps = max_gaps

    def first_time(self, edge: str, sequence: int) -> bool:
        """Record `sequence` for `edge`; True if it had not been seen before."""
        progress = self._edges.setdefault(edge, _EdgeProgress())
        if sequence <= progress.floor or sequence in progress.beyond:
            return False
        progress.beyond.add(sequence)
        while progress.floor + 1 in progress.beyond:
            progress.floor += 1
            progress.beyond.discard(progress.floor)
        if len(progress.beyond) > self._max_gaps:
            progress.floor = min(progress.beyond)
            progress.beyond.discard(progress.floor)
            while progress.floor + 1 in progress.beyond:
                progress.floor += 1
                progress.beyond.discard(progress.floor)
        return True

    def floor(self, edge: str) -> int:
        """Highest sequence up to which everything from `edge` was seen."""
        progress = self._edges.get(edge)
        return 0 if progress is None else progress.floor

    def restore(self, edge: str, floor: int) -> None:
        """Start from a floor persisted elsewhere (after a consumer restart)."""
        self._edges[edge] = _EdgeProgress(floor=floor)
