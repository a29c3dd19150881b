"""The cloud's hard-example store: payloads as files, an index in SQLite, labels, model history.

Layout under the cloud data dir (``<data_dir>/learning``)::

    index.db                     SQLite (WAL): examples, model_history
    examples/ab/<sha256>.eft     the input tensor (`schemas.tensor` bytes), one file each

Guarantees:

* **Dedupe**: an example's id is the SHA-256 of its tensor bytes (checked against the edge's
  ``dedupe_key``), so the same image sent by two edges, or re-sent after an outage, is stored
  once; the second arrival only counts as a duplicate.
* **Bounded**: at most `max_examples` examples and `max_bytes` of payload. Past either, the
  oldest *unlabelled* examples go first (nobody will label a backlog that old), then the
  oldest labelled ones; the eviction count is kept. Nothing grows without limit.
* **Crash-safe**: a payload is written to a temporary file and renamed before its index row is
  committed; a row never points at a missing file (an orphan file is harmless).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import LabelNotFound, LearningError
from schemas.hard_examples import HardExample
from schemas.tensor import decode_tensor

_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id TEXT PRIMARY KEY, edge TEXT NOT NULL, pipeline TEXT NOT NULL, model TEXT NOT NULL,
    model_version TEXT NOT NULL, reason TEXT NOT NULL, sent_at REAL NOT NULL,
    received_at REAL NOT NULL, size INTEGER NOT NULL, edge_label INTEGER,
    edge_confidence REAL, label INTEGER, label_source TEXT, label_confidence REAL,
    labelled_at REAL
);
CREATE INDEX IF NOT EXISTS examples_unlabelled ON examples (label, received_at);
CREATE INDEX IF NOT EXISTS examples_labelled_at ON examples (labelled_at);
CREATE TABLE IF NOT EXISTS model_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, model TEXT NOT NULL,
    version TEXT NOT NULL, trigger TEXT NOT NULL, samples INTEGER NOT NULL,
    eval_size INTEGER NOT NULL, old_accuracy REAL NOT NULL, new_accuracy REAL NOT NULL,
    deployed INTEGER NOT NULL, decision TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class StoredExample:
    """One row of the index."""

    id: str
    edge: str
    pipeline: str
    model: str
    model_version: str
    reason: str
    received_at: float
    size: int
    edge_label: int | None
    edge_confidence: float | None
    label: int | None
    label_source: str | None
    labelled_at: float | None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One retraining decision (deployed or not) and the metrics it was based on."""

    at: float
    model: str
    version: str
    trigger: str
    samples: int
    eval_size: int
    old_accuracy: float
    new_accuracy: float
    deployed: bool
    decision: str


_SELECT = (
    "SELECT id, edge, pipeline, model, model_version, reason, received_at, size, edge_label, "
    "edge_confidence, label, label_source, labelled_at FROM examples"
)
_INSERT = (
    "INSERT INTO examples (id, edge, pipeline, model, model_version, reason, received_at, size, "
    "edge_label, edge_confidence, sent_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)


class HardExampleStore:
    """Hard examples and their labels, on disk, bounded.

    Args:
        directory: where the index and the payload files live (created).
        max_examples: most examples kept.
        max_bytes: most payload bytes kept.

    """

    def __init__(
        self, directory: Path, *, max_examples: int = 100_000, max_bytes: int = 1 << 30
    ) -> None:
        self.directory = directory
        self.max_examples = max_examples
        self.max_bytes = max_bytes
        (directory / "examples").mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(directory / "index.db", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.duplicates = 0
        self.evicted = 0

    def close(self) -> None:
        """Close the index (safe twice)."""
        self._db.close()

    def _path(self, example_id: str) -> Path:
        return self.directory / "examples" / example_id[:2] / f"{example_id}.eft"

    def add(self, edge: str, header: HardExample, tensor: bytes) -> str | None:
        """Store one example; its id, or None when it was already there.

        Raises:
            LearningError: the payload's SHA-256 differs from the header's ``dedupe_key``.

        """
        example_id = hashlib.sha256(tensor).hexdigest()
        if example_id != header.dedupe_key:
            raise LearningError(f"hard example from {edge}: dedupe_key is not its sha256")
        if self._db.execute("SELECT 1 FROM examples WHERE id=?", (example_id,)).fetchone():
            self.duplicates += 1
            return None
        path = self._path(example_id)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(tensor)
        tmp.replace(path)
        self._db.execute(
            _INSERT,
            (
                example_id,
                edge,
                header.pipeline,
                header.model,
                header.model_version,
                header.reason,
                time.time(),
                len(tensor),
                header.edge_result.label,
                header.edge_result.confidence,
                header.timestamp,
            ),
        )
        self._evict()
        return example_id

    def _evict(self) -> None:
        count, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM examples"
        ).fetchone()
        while count > self.max_examples or size > self.max_bytes:
            row = self._db.execute(
                "SELECT id, size FROM examples ORDER BY label IS NOT NULL, received_at LIMIT 1"
            ).fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM examples WHERE id=?", (row[0],))
            self._path(row[0]).unlink(missing_ok=True)
            count, size = count - 1, size - row[1]
            self.evicted += 1

    def set_label(
        self, example_id: str, label: int, *, source: str = "human", confidence: float = 1.0
    ) -> None:
        """Label one example (a person's label replaces an automatic one).

        Raises:
            LabelNotFound: no example has this id (or unique id prefix).

        """
        full = self.resolve(example_id)
        self._db.execute(
            "UPDATE examples SET label=?, label_source=?, label_confidence=?, labelled_at=? "
            "WHERE id=?",
            (label, source, confidence, time.time(), full),
        )

    def resolve(self, prefix: str) -> str:
        """The full id of the one example whose id starts with `prefix` (>= 6 characters).

        Raises:
            LabelNotFound: none, or more than one.

        """
        if len(prefix) < 6:
            raise LabelNotFound(prefix)
        rows = self._db.execute(
            "SELECT id FROM examples WHERE id >= ? AND id < ? LIMIT 2", (prefix, prefix + "g")
        ).fetchall()
        if len(rows) != 1:
            raise LabelNotFound(prefix)
        return str(rows[0][0])

    def get(self, example_id: str) -> StoredExample:
        """One example's index row.

        Raises:
            LabelNotFound: unknown id.

        """
        row = self._db.execute(_SELECT + " WHERE id=?", (self.resolve(example_id),)).fetchone()
        return StoredExample(*row)

    def pending(self, limit: int = 50) -> list[StoredExample]:
        """The label queue: unlabelled examples, oldest first."""
        rows = self._db.execute(
            _SELECT + " WHERE label IS NULL ORDER BY received_at LIMIT ?",
            (limit,),
        ).fetchall()
        return [StoredExample(*r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Examples by label state, and the store's counters."""
        total, labelled, size = self._db.execute(
            "SELECT COUNT(*), COUNT(label), COALESCE(SUM(size), 0) FROM examples"
        ).fetchone()
        return {
            "examples": total,
            "labelled": labelled,
            "unlabelled": total - labelled,
            "bytes": size,
            "duplicates": self.duplicates,
            "evicted": self.evicted,
        }

    def labelled_since(self, since: float) -> int:
        """How many examples were labelled after `since` (the sample-count trigger's input)."""
        (count,) = self._db.execute(
            "SELECT COUNT(*) FROM examples WHERE labelled_at > ?", (since,)
        ).fetchone()
        return int(count)

    def labelled(self) -> tuple[list[str], NDArray[np.float32], NDArray[np.int64]]:
        """Every labelled example: ids, inputs [N, F] and labels (for retraining)."""
        rows = self._db.execute(
            "SELECT id, label FROM examples WHERE label IS NOT NULL ORDER BY id"
        ).fetchall()
        ids = [str(r[0]) for r in rows]
        xs = [np.asarray(decode_tensor(self._path(i).read_bytes()), np.float32) for i in ids]
        x = np.stack([a.reshape(-1) for a in xs]) if xs else np.zeros((0, 0), np.float32)
        return ids, x, np.array([int(r[1]) for r in rows], dtype=np.int64)

    def record(self, entry: HistoryEntry) -> None:
        """Append one retraining decision to the history."""
        self._db.execute(
            "INSERT INTO model_history (at, model, version, trigger, samples, eval_size, "
            "old_accuracy, new_accuracy, deployed, decision) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                entry.at,
                entry.model,
                entry.version,
                entry.trigger,
                entry.samples,
                entry.eval_size,
                entry.old_accuracy,
                entry.new_accuracy,
                int(entry.deployed),
                entry.decision,
            ),
        )

    def history(self, model: str | None = None) -> list[HistoryEntry]:
        """Every decision, oldest first (one model's, or all)."""
        query = (
            "SELECT at, model, version, trigger, samples, eval_size, old_accuracy, "
            "new_accuracy, deployed, decision FROM model_history"
        )
        rows = (
            self._db.execute(query + " WHERE model=? ORDER BY seq", (model,))
            if model
            else self._db.execute(query + " ORDER BY seq")
        ).fetchall()
        return [
            HistoryEntry(
                at=r[0],
                model=r[1],
                version=r[2],
                trigger=r[3],
                samples=r[4],
                eval_size=r[5],
                old_accuracy=r[6],
                new_accuracy=r[7],
                deployed=bool(r[8]),
                decision=r[9],
            )
            for r in rows
        ]
