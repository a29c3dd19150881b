"""Which desired value wins: the edge/cloud reconciliation policy (docs/twin.md, "Cloud sync").

Each desired value carries KubeEdge-style counters: `edge` counts changes made at the edge (apps,
CLI), `cloud` counts changes that came down from the cloud. A cloud update says, per property,
which version it was built on (`base`). If the cloud had seen every edge change
(``base.edge >= current.edge``) the update is a plain successor and applies. If not, the edge
changed the value while the cloud could not see it (typically during a WAN outage): the two
edits are concurrent and the later write (by its timestamp) wins; the loser is reported as a
CONFLICT so neither side's change disappears silently. Edge and app updates always apply (their
own optimistic check is `expected_version`, done by the service).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.base import JsonValue
from schemas.twin import TwinSource, TwinValue, TwinVersion


@dataclass(frozen=True, slots=True)
class DesiredChange:
    """A desired value that will be applied, with its new version."""

    value: JsonValue
    version: TwinVersion


def resolve_desired(
    current: TwinValue | None,
    value: JsonValue,
    *,
    source: TwinSource,
    timestamp: float,
    base: TwinVersion | None,
) -> DesiredChange | str:
    """Decide one property's desired update.

    Returns:
        The change to apply, or the reason it lost (a concurrent, newer edge change).

    """
    held = current.version if current is not None else TwinVersion()
    if source is not TwinSource.CLOUD:
        return DesiredChange(value, TwinVersion(edge=held.edge + 1, cloud=held.cloud))
    cloud = max(held.cloud, base.cloud if base is not None else 0) + 1
    seen_edge = base.edge if base is not None else 0
    if current is None or seen_edge >= held.edge or timestamp > current.timestamp:
        return DesiredChange(value, TwinVersion(edge=held.edge, cloud=cloud))
    return (
        f"the edge changed it (edge version {held.edge}, cloud saw {seen_edge}) "
        f"after the cloud's write at {timestamp:.3f}"
    )
