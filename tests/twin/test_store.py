"""The store and the edge/cloud reconciliation policy (docs/twin.md, "Cloud sync")."""

from __future__ import annotations

from pathlib import Path

from schemas.readings import DeviceState
from schemas.twin import TwinSource, TwinVersion
from twin.store import TwinStore


def test_state_reloads_from_disk_with_versions(tmp_path: Path) -> None:
    store = TwinStore(tmp_path / "t.db")
    store.set_desired("d", {"a": [1, "x y"]}, source=TwinSource.APP, timestamp=10.0)
    store.set_desired(
        "d",
        {"a": 2},
        source=TwinSource.CLOUD,
        timestamp=11.0,
        base_versions={"a": TwinVersion(edge=1)},
    )
    store.report_many([("d", "a", 2, 12.0), ("d", "b", {"k": None}, 12.0)])
    store.set_state("d", DeviceState.ONLINE, "ok")
    store.close()
    document = TwinStore(tmp_path / "t.db").document("d")
    a = document.properties["a"]
    assert a.desired is not None
    assert a.desired.value == 2
    assert a.desired.version == TwinVersion(edge=1, cloud=1)
    assert a.reported is not None
    assert a.reported.version.edge == 1
    assert document.properties["b"].reported.value == {"k": None}  # type: ignore[union-attr]
    assert document.desired_version == 2
    assert document.state is DeviceState.ONLINE
    assert document.delta() == {}


def test_older_reading_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    store = TwinStore(tmp_path / "t.db")
    assert store.report_many([("d", "a", 1, 20.0)]) == {"d"}
    assert store.report_many([("d", "a", 0, 10.0)]) == set()
    assert store.reported("d")["a"].value == 1
    assert store.report_many([("d", "a", 1, 30.0)]) == set()  # same value: stored, not a change
    assert store.reported("d")["a"].timestamp == 30.0


def test_cloud_update_built_on_the_latest_edge_version_wins(tmp_path: Path) -> None:
    store = TwinStore(tmp_path / "t.db")
    store.set_desired("d", {"a": 1}, source=TwinSource.EDGE, timestamp=100.0)
    outcome = store.set_desired(
        "d",
        {"a": 2},
        source=TwinSource.CLOUD,
        timestamp=50.0,
        base_versions={"a": TwinVersion(edge=1)},
    )
    assert outcome.applied == {"a": 2}
    assert not outcome.lost


def test_offline_edge_change_beats_an_older_concurrent_cloud_change(tmp_path: Path) -> None:
    store = TwinStore(tmp_path / "t.db")
    store.set_desired("d", {"a": "cloud-1"}, source=TwinSource.CLOUD, timestamp=100.0)
    # Link down: the edge changes the value; the cloud, not having seen it, changes it earlier.
    store.set_desired("d", {"a": "edge"}, source=TwinSource.EDGE, timestamp=200.0)
    stale = store.set_desired(
        "d",
        {"a": "cloud-2"},
        source=TwinSource.CLOUD,
        timestamp=150.0,
        base_versions={"a": TwinVersion(cloud=1)},
    )
    assert stale.applied == {}
    assert "edge changed it" in stale.lost["a"]
    assert store.desired("d")["a"].value == "edge"
    newer = store.set_desired(
        "d",
        {"a": "cloud-3"},
        source=TwinSource.CLOUD,
        timestamp=300.0,
        base_versions={"a": TwinVersion(cloud=1)},
    )
    assert newer.applied == {"a": "cloud-3"}
    assert store.desired("d")["a"].version == TwinVersion(edge=1, cloud=2)


def test_none_clears_a_desired_value(tmp_path: Path) -> None:
    store = TwinStore(tmp_path / "t.db")
    store.set_desired("d", {"a": 1}, source=TwinSource.APP, timestamp=1.0)
    store.set_desired("d", {"a": None}, source=TwinSource.APP, timestamp=2.0)
    store.close()
    assert TwinStore(tmp_path / "t.db").desired("d") == {}


def test_scaled_read_back_noise_still_satisfies_desired() -> None:
    from schemas.twin import values_match

    assert values_match(10.3, 103 * 0.1)
    assert values_match({"a": [1, 2.5]}, {"a": [1.0, 2.5000000000000004]})
    assert not values_match(10.3, 10.4)
    assert not values_match(True, 1)
    assert not values_match("1", 1)
