"""The twin's SQLite store (WAL): what the edge knows about each device property."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reported (
    device TEXT NOT NULL,
    property TEXT NOT NULL,
    value TEXT NOT NULL,
    timestamp REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (device, property)
);
"""


@dataclass(frozen=True, slots=True)
class ReportedValue:
    """The last value a device reported for one property."""

    device: str
    property: str
    value: Any
    timestamp: float
    version: int


class TwinStore:
    """Reported state per device and property, durable across restarts.

    WAL mode with ``synchronous=NORMAL`` keeps a committed update across a crash of the
    process; a power cut may lose the last transactions (see docs/twin.md).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def report_many(self, values: Iterable[tuple[str, str, Any, float]]) -> None:
        """Record reported values in one transaction; an older timestamp never wins."""
        rows = [(d, p, json.dumps(v), ts) for d, p, v, ts in values]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                """
                INSERT INTO reported (device, property, value, timestamp) VALUES (?, ?, ?, ?)
                ON CONFLICT (device, property) DO UPDATE SET
                    value = excluded.value, timestamp = excluded.timestamp,
                    version = reported.version + 1
                WHERE excluded.timestamp >= reported.timestamp
                """,
                rows,
            )

    def reported(self, device: str) -> dict[str, ReportedValue]:
        """Everything reported for one device, by property."""
        rows = self._db.execute(
            "SELECT property, value, timestamp, version FROM reported WHERE device = ?",
            (device,),
        ).fetchall()
        return {
            prop: ReportedValue(device, prop, json.loads(value), ts, version)
            for prop, value, ts, version in rows
        }
