"""What the cloud believes about an uplink message: who sent it, and where it stands.

The hub confines each edge to its own ``ef.up.{edge}.>``, so the subject names the sender; the
headers are the sender's claims and are checked, never trusted, before they reach the per-edge
dedupe state (`cloud_bridge.dedupe`), whose keys are stored in a JetStream KV bucket.
"""

from __future__ import annotations

import contextlib
import re

from cloud_bridge import headers
from schemas.base import check_name
from schemas.errors import InvalidName
from schemas.topics import TrafficClass

_POSITION = re.compile(r"(?:([0-9]{1,20})\.)?([0-9]{1,20})")  # [epoch.]seq: ASCII, up to 2**64
_KV_SAFE = re.compile(r"[-/_=.a-zA-Z0-9]+")  # what a JetStream KV key may hold
_KV_ENCODED = "_x."


def kv_key(key: str) -> str:
    """The KV key of a tracker key; hex-encoded when it is not KV-safe.

    Edge names may be any `schemas.base.Name` (``ünïcødé``), which KV refuses: the put failed,
    the batch was never acknowledged, and one such edge wedged the consumer for every edge.
    A tracker key always ends in a class name, which is never all hex, so no clash.
    """
    return key if _KV_SAFE.fullmatch(key) else _KV_ENCODED + key.encode().hex()


def tracker_key(kv_key: str) -> str:
    """Inverse of `kv_key`."""
    if kv_key.startswith(_KV_ENCODED):
        with contextlib.suppress(ValueError):
            return bytes.fromhex(kv_key[len(_KV_ENCODED) :]).decode()
    return kv_key


class UplinkRefused(ValueError):
    """An uplink message no cloud service can accept (reported as a dead letter)."""


def position(hdrs: dict[str, str]) -> tuple[int, int]:
    """(epoch, sequence) of ``Ef-Edge-Seq``; (0, 0) when absent.

    Raises:
        UplinkRefused: the header is not ``[epoch.]seq`` in ASCII digits (at most 20 digits
            each: an edge must not make the tracker hold a number of any size).

    """
    text = hdrs.get(headers.EDGE_SEQ)
    if text is None:
        return 0, 0
    match = _POSITION.fullmatch(text)
    if match is None:
        raise UplinkRefused(f"{headers.EDGE_SEQ} {text[:40]!r} is not [epoch.]sequence")
    return int(match.group(1) or 0), int(match.group(2))


def origin(subject: str, hdrs: dict[str, str]) -> tuple[str, TrafficClass]:
    """The sending edge and traffic class, read from the subject, not from a header.

    The hub's permissions confine an edge to its own ``ef.up.{edge}.>``, so the subject says
    who sent a message; the ``Ef-Edge`` header is only the sender's claim.

    Raises:
        UplinkRefused: too few tokens, an invalid edge token, an unknown class, or an ``Ef-Edge``
            header naming another edge (a spoof: it would poison that edge's dedupe state).

    """
    parts = subject.split(".")
    if len(parts) < 5:  # ef.up.{edge}.{class}.{topic...}
        raise UplinkRefused("too few subject tokens for ef.up.{edge}.{class}.{...}")
    try:
        edge = check_name(parts[2])
        traffic_class = TrafficClass(parts[3])
    except (InvalidName, ValueError) as exc:
        raise UplinkRefused(f"not an uplink subject: {exc}") from exc
    claimed = hdrs.get(headers.EDGE)
    if claimed is not None and claimed != edge:
        raise UplinkRefused(f"{headers.EDGE} {claimed[:140]!r} is not the subject's edge {edge!r}")
    return edge, traffic_class
