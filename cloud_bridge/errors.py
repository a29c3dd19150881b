"""Errors of the cloud bridge."""

from __future__ import annotations

from schemas.errors import EdgefabricError


class BridgeError(EdgefabricError):
    """Base of every bridge error."""


class LinkDown(BridgeError):
    """The uplink to the cloud hub is down; messages stay queued on the edge."""
