"""Exactly-once delivery at the cloud consumer, for outages longer than any dedupe window.

JetStream drops a re-published message only while its `Nats-Msg-Id` is inside the stream's
duplicate window. The bridge stamps every message with its position in its edge class queue
(``epoch.sequence``; the epoch changes only if that queue is re-created), so the cloud can
remember, per edge and class, the contiguous prefix it has seen plus the few sequences seen
beyond a gap: exact however long the outage, in bounded memory, and small enough to persist
(the consumer keeps it in a KV bucket on the hub, so it survives a consumer restart too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class _Progress:
    epoch: int = 0
    floor: int = 0
    beyond: set[int] = field(default_factory=set)


class EdgeSequenceTracker:
    """Remembers which queue sequences were delivered, per key (``edge.class``).

    Args:
        max_gaps: sequences tracked above the contiguous floor per key before the floor is
            moved up (a gap that never fills means the edge evicted those messages on purpose,
            e.g. hard examples dropped by their class limit).

    """

    def __init__(self, *, max_gaps: int = 10_000) -> None:
        self._keys: dict[str, _Progress] = {}
        self._max_gaps = max_gaps
        self.dirty: set[str] = set()

    def seen(self, key: str, sequence: int, epoch: int = 0) -> bool:
        """True if (`epoch`, `sequence`) of `key` was already recorded."""
        progress = self._keys.get(key)
        if progress is None or epoch > progress.epoch:
            return False
        if epoch < progress.epoch:
            return True  # an older life of a queue cannot send after a newer one did
        return sequence <= progress.floor or sequence in progress.beyond

    def record(self, key: str, sequence: int, epoch: int = 0) -> None:
        """Mark a sequence delivered."""
        progress = self._keys.get(key)
        if progress is None or epoch > progress.epoch:
            progress = self._keys[key] = _Progress(epoch=epoch)
        self.dirty.add(key)
        progress.beyond.add(sequence)
        self._advance(progress)
        while len(progress.beyond) > self._max_gaps:
            progress.floor = min(progress.beyond)
            self._advance(progress)

    @staticmethod
    def _advance(progress: _Progress) -> None:
        progress.beyond.discard(progress.floor)
        while progress.floor + 1 in progress.beyond:
            progress.floor += 1
            progress.beyond.discard(progress.floor)

    def first_time(self, key: str, sequence: int, epoch: int = 0) -> bool:
        """Record `sequence` for `key`; True if it had not been seen before."""
        if self.seen(key, sequence, epoch):
            return False
        self.record(key, sequence, epoch)
        return True

    def floor(self, key: str) -> int:
        """Highest sequence up to which everything of `key` was seen."""
        progress = self._keys.get(key)
        return 0 if progress is None else progress.floor

    def dump(self, key: str) -> bytes:
        """The state of one key, for persisting."""
        p = self._keys.get(key, _Progress())
        return json.dumps({"epoch": p.epoch, "floor": p.floor, "beyond": sorted(p.beyond)}).encode()

    def load(self, key: str, raw: bytes) -> None:
        """Restore one key from `dump` output (after a consumer restart)."""
        data = json.loads(raw)
        self._keys[key] = _Progress(
            epoch=int(data["epoch"]), floor=int(data["floor"]), beyond=set(data["beyond"])
        )

    def restore(self, key: str, floor: int) -> None:
        """Start a key from a floor persisted elsewhere."""
        self._keys[key] = _Progress(floor=floor)
