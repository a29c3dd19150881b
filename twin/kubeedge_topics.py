"""KubeEdge's device-twin MQTT topics (``$hw/events/device/...``), for the opt-in adapter.

These live here, beside `twin.kubeedge`, and not in `schemas.topics`, because they are a
foreign namespace: KubeEdge defines them and apps written for KubeEdge hard-code them; edgefabric
only mirrors them. Since KubeEdge v1.16 a device id is ``{namespace}/{name}`` (two topic levels);
older ids are one level. Both are accepted, each segment validated like any edgefabric name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.base import check_name
from schemas.errors import InvalidName

PREFIX = "$hw/events/device"


class KubeEdgeAction(StrEnum):
    """The request topics the adapter serves (the suffix after the device id)."""

    TWIN_UPDATE = "twin/update"
    TWIN_GET = "twin/get"
    STATE_UPDATE = "state/update"


@dataclass(frozen=True, slots=True)
class KubeEdgeTopic:
    """A parsed request topic: the device id as the app wrote it, the twin name, the action."""

    device_id: str
    device: str
    action: KubeEdgeAction


def device_id(name: str, namespace: str | None = None) -> str:
    """The KubeEdge device id: ``name`` or ``namespace/name`` (both segments validated)."""
    if namespace is None:
        return check_name(name)
    return f"{check_name(namespace)}/{check_name(name)}"


def _topic(device: str, suffix: str) -> str:
    for segment in device.split("/"):
        check_name(segment)
    if device.count("/") > 1:
        raise InvalidName(device, "has more than two segments")
    return f"{PREFIX}/{device}/{suffix}"


def twin_update(device: str) -> str:
    """Where apps and mappers send `DeviceTwinUpdate` (expected and/or actual values)."""
    return _topic(device, "twin/update")


def twin_update_result(device: str) -> str:
    """Where the twin echoes an accepted update."""
    return _topic(device, "twin/update/result")


def twin_update_delta(device: str) -> str:
    """Where the twin publishes `DeviceTwinDelta` when expected differs from actual."""
    return _topic(device, "twin/update/delta")


def twin_get(device: str) -> str:
    """Where apps ask for the twin."""
    return _topic(device, "twin/get")


def twin_get_result(device: str) -> str:
    """Where the twin answers `twin/get`."""
    return _topic(device, "twin/get/result")


def state_update(device: str) -> str:
    """Where a mapper reports the device's state (online/offline)."""
    return _topic(device, "state/update")


def state_update_result(device: str) -> str:
    """Where the twin echoes a state update."""
    return _topic(device, "state/update/result")


def probe(token: str) -> str:
    """A topic in KubeEdge's namespace that no request filter matches, for the broker check."""
    return _topic(token, "ef-probe")


def request_filters() -> dict[str, str]:
    """Subscription filters of every request topic, one- and two-segment ids, by task name."""
    return {
        f"kubeedge.{action.name.lower()}.{levels}": f"{PREFIX}/{'/'.join(['+'] * levels)}/{action}"
        for action in KubeEdgeAction
        for levels in (1, 2)
    }


def parse(topic: str) -> KubeEdgeTopic | None:
    """Read a request topic; None when it is not one (or a name in it is invalid)."""
    if not topic.startswith(PREFIX + "/"):
        return None
    rest = topic[len(PREFIX) + 1 :]
    for action in KubeEdgeAction:
        suffix = "/" + action.value
        if rest.endswith(suffix):
            segments = rest[: -len(suffix)].split("/")
            if len(segments) not in (1, 2):
                return None
            try:
                for segment in segments:
                    check_name(segment)
            except InvalidName:
                return None
            return KubeEdgeTopic("/".join(segments), segments[-1], action)
    return None
