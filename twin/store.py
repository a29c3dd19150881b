"""The twin's SQLite store (WAL): desired, reported, versions and write outcomes per property.

Every method that changes state commits before it returns, so a caller that replies *after* the
call has a durable answer: WAL with ``synchronous=NORMAL`` keeps a committed transaction across a
``kill -9`` of the process (a power cut may lose the last ones; docs/twin.md). Reported values
arrive in batches and are written in one transaction per batch, which is what keeps the twin at
bus speed. An in-memory mirror, loaded at open and updated only after each commit, serves reads
and change detection without touching the disk.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.base import JsonValue
from schemas.readings import DeviceState
from schemas.twin import TwinDocument, TwinProperty, TwinSource, TwinValue, TwinVersion, WriteStatus
from twin.errors import TwinStoreError
from twin.sync import DesiredChange, resolve_desired

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY,
    desired_version INTEGER NOT NULL DEFAULT 0,
    state TEXT,
    state_reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS desired (
    device TEXT NOT NULL, property TEXT NOT NULL,
    value TEXT NOT NULL, timestamp REAL NOT NULL,
    edge INTEGER NOT NULL, cloud INTEGER NOT NULL, source TEXT,
    PRIMARY KEY (device, property)
);
CREATE TABLE IF NOT EXISTS reported (
    device TEXT NOT NULL, property TEXT NOT NULL,
    value TEXT NOT NULL, timestamp REAL NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (device, property)
);
CREATE TABLE IF NOT EXISTS writes (
    device TEXT NOT NULL, property TEXT NOT NULL, status TEXT NOT NULL,
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


@dataclass(slots=True)
class _Device:
    desired_version: int = 0
    state: DeviceState | None = None
    state_reason: str = ""
    types: dict[str, str] = field(default_factory=dict)
    desired: dict[str, TwinValue] = field(default_factory=dict)
    reported: dict[str, TwinValue] = field(default_factory=dict)
    writes: dict[str, WriteStatus] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DesiredOutcome:
    """What `TwinStore.set_desired` did: applied values, per-property losses, new version."""

    applied: dict[str, JsonValue]
    lost: dict[str, str]
    desired_version: int


class TwinStore:
    """Durable twin state of every device the edge has seen."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise TwinStoreError(f"cannot open twin store {path}: {exc}") from exc
        self._devices: dict[str, _Device] = {}
        self._load()

    def close(self) -> None:
        """Close the database (safe twice)."""
        self._db.close()

    def _device(self, name: str) -> _Device:
        dev = self._devices.get(name)
        if dev is None:
            dev = self._devices[name] = _Device()
        return dev

    def _load(self) -> None:
        db = self._db
        for name, version, state, reason in db.execute("SELECT * FROM devices"):
            dev = self._device(name)
            dev.desired_version = version
            dev.state = DeviceState(state) if state else None
            dev.state_reason = reason
        for name, prop, value, ts, edge, cloud, source in db.execute("SELECT * FROM desired"):
            self._device(name).desired[prop] = TwinValue(
                value=json.loads(value),
                timestamp=ts,
                version=TwinVersion(edge=edge, cloud=cloud),
                source=TwinSource(source) if source else None,
            )
        for name, prop, value, ts, version in db.execute("SELECT * FROM reported"):
            self._device(name).reported[prop] = TwinValue(
                value=json.loads(value), timestamp=ts, version=TwinVersion(edge=version)
            )
        for name, prop, status in db.execute("SELECT * FROM writes"):
            self._device(name).writes[prop] = WriteStatus.model_validate_json(status)

    def _commit(self, statements: Iterable[tuple[str, Sequence[tuple[Any, ...]]]]) -> None:
        try:
            with self._db:
                self._db.execute("BEGIN")
                for sql, rows in statements:
                    self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise TwinStoreError(f"twin store write failed: {exc}") from exc

    # ---- reads --------------------------------------------------------------------------

    def devices(self) -> list[str]:
        """Every device the twin holds state for."""
        return sorted(self._devices)

    def desired_version(self, device: str) -> int:
        """The device's count of accepted desired changes (0 for an unknown device)."""
        dev = self._devices.get(device)
        return 0 if dev is None else dev.desired_version

    def desired(self, device: str) -> dict[str, TwinValue]:
        """Desired values of one device, by property."""
        dev = self._devices.get(device)
        return {} if dev is None else dict(dev.desired)

    def reported(self, device: str) -> dict[str, ReportedValue]:
        """Everything reported for one device, by property."""
        dev = self._devices.get(device)
        if dev is None:
            return {}
        return {
            prop: ReportedValue(device, prop, side.value, side.timestamp, side.version.edge)
            for prop, side in dev.reported.items()
        }

    def document(self, device: str) -> TwinDocument:
        """The full twin document of one device (empty for a device never seen)."""
        dev = self._devices.get(device) or _Device()
        names = sorted({*dev.types, *dev.desired, *dev.reported})
        return TwinDocument(
            device=device,
            desired_version=dev.desired_version,
            state=dev.state,
            state_reason=dev.state_reason,
            properties={
                name: TwinProperty(
                    type=dev.types.get(name),
                    desired=dev.desired.get(name),
                    reported=dev.reported.get(name),
                    write=dev.writes.get(name),
                )
                for name in names
            },
        )

    # ---- writes -------------------------------------------------------------------------

    def set_types(self, device: str, types: Mapping[str, str]) -> None:
        """Record property types from the device model (config, so not persisted)."""
        self._device(device).types.update(types)

    def set_desired(
        self,
        device: str,
        values: Mapping[str, JsonValue],
        *,
        source: TwinSource,
        timestamp: float,
        base_versions: Mapping[str, TwinVersion] | None = None,
    ) -> DesiredOutcome:
        """Apply desired values under the sync policy (twin.sync) and commit them.

        Returns:
            The values applied, the properties that lost a conflict (with why) and the
            device's new desired version (unchanged when nothing applied).

        """
        dev = self._device(device)
        changes: dict[str, DesiredChange] = {}
        lost: dict[str, str] = {}
        for prop, value in values.items():
            outcome = resolve_desired(
                dev.desired.get(prop),
                value,
                source=source,
                timestamp=timestamp,
                base=(base_versions or {}).get(prop),
            )
            if isinstance(outcome, str):
                lost[prop] = outcome
            else:
                changes[prop] = outcome
        if not changes:
            return DesiredOutcome({}, lost, dev.desired_version)
        version = dev.desired_version + 1
        upserts = [
            (device, p, json.dumps(c.value), timestamp, c.version.edge, c.version.cloud, source)
            for p, c in changes.items()
            if c.value is not None
        ]
        deletes = [(device, p) for p, c in changes.items() if c.value is None]
        self._commit(
            [
                (
                    "INSERT OR REPLACE INTO desired VALUES (?, ?, ?, ?, ?, ?, ?)",
                    upserts,
                ),
                ("DELETE FROM desired WHERE device = ? AND property = ?", deletes),
                (
                    "INSERT INTO devices (device, desired_version) VALUES (?, ?) "
                    "ON CONFLICT (device) DO UPDATE SET desired_version = excluded.desired_version",
                    [(device, version)],
                ),
            ]
        )
        dev.desired_version = version
        for prop, change in changes.items():
            if change.value is None:
                dev.desired.pop(prop, None)
            else:
                dev.desired[prop] = TwinValue(
                    value=change.value, timestamp=timestamp, version=change.version, source=source
                )
        return DesiredOutcome({p: c.value for p, c in changes.items()}, lost, version)

    def report_many(self, values: Iterable[tuple[str, str, JsonValue, float]]) -> set[str]:
        """Record reported values in one transaction; an older timestamp never wins.

        Returns:
            The devices whose reported *value* changed (a new timestamp alone is stored but
            is not a change worth publishing).

        """
        latest: dict[tuple[str, str], tuple[JsonValue, float]] = {}
        for device, prop, value, ts in values:
            key = (device, prop)
            held = latest.get(key)
            if held is None or ts >= held[1]:
                latest[key] = (value, ts)
        rows: list[tuple[str, str, str, float, int]] = []
        changed: set[str] = set()
        updates: list[tuple[str, str, TwinValue]] = []
        for (device, prop), (value, ts) in latest.items():
            current = self._devices.get(device)
            side = current.reported.get(prop) if current is not None else None
            if side is not None and ts < side.timestamp:
                continue
            version = TwinVersion(edge=(side.version.edge if side else 0) + 1)
            rows.append((device, prop, json.dumps(value), ts, version.edge))
            updates.append((device, prop, TwinValue(value=value, timestamp=ts, version=version)))
            if side is None or side.value != value:
                changed.add(device)
        if rows:
            self._commit([("INSERT OR REPLACE INTO reported VALUES (?, ?, ?, ?, ?)", rows)])
        for device, prop, twin_value in updates:
            self._device(device).reported[prop] = twin_value
        return changed

    def record_writes(self, device: str, statuses: Mapping[str, WriteStatus]) -> None:
        """Keep the outcome of the last write of each property (pending, done, failed)."""
        rows = [(device, p, s.model_dump_json()) for p, s in statuses.items()]
        self._commit([("INSERT OR REPLACE INTO writes VALUES (?, ?, ?)", rows)])
        self._device(device).writes.update(statuses)

    def set_state(self, device: str, state: DeviceState, reason: str = "") -> bool:
        """Record the device's link state; returns True when it changed."""
        dev = self._device(device)
        if dev.state is state and dev.state_reason == reason:
            return False
        self._commit(
            [
                (
                    "INSERT INTO devices (device, state, state_reason) VALUES (?, ?, ?) "
                    "ON CONFLICT (device) DO UPDATE SET state = excluded.state, "
                    "state_reason = excluded.state_reason",
                    [(device, state.value, reason)],
                )
            ]
        )
        dev.state, dev.state_reason = state, reason
        return True
