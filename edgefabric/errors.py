"""Errors of the composition root."""

from __future__ import annotations

from schemas.errors import EdgefabricError


class ConfigError(EdgefabricError, ValueError):
    """A config file is unreadable or invalid; the message names the file and the field."""
