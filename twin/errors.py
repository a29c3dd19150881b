"""Errors of the device twin: each carries the `TwinErrorCode` its error reply will show."""

from __future__ import annotations

from schemas.errors import EdgefabricError
from schemas.twin import TwinErrorCode


class TwinServiceError(EdgefabricError):
    """Base of every twin error."""


class TwinUpdateRefused(TwinServiceError):
    """A desired update the twin will not apply.

    Attributes:
        code: conflict or validation.
        reason: one line for humans.
        properties: per property, what was wrong with it (may be empty).

    """

    def __init__(
        self, code: TwinErrorCode, reason: str, properties: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{code.value}: {reason}")
        self.code = code
        self.reason = reason
        self.properties = dict(properties or {})


class TwinStoreError(TwinServiceError):
    """The SQLite store could not be opened or written (disk full, corrupt file)."""


class DollarTopicsRefused(TwinServiceError):
    """The broker does not deliver client publishes to ``$`` topics (amqtt, MQTT-4.7.2-1).

    The KubeEdge adapter cannot work there: KubeEdge apps would publish into a black hole and
    wait forever. Raised at start-up instead; the message names the config field to change.
    """
