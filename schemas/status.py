"""Service health and dead letters: how edgefabric says what went wrong instead of crashing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import JsonValue, Message, Name, now


class ServiceStatus(Message):
    """A service's state and counters, published retained on change and periodically."""

    kind: Literal["service_status"] = "service_status"
    service: Name
    state: str
    detail: str = ""
    counters: dict[str, JsonValue] = Field(default_factory=dict)
    timestamp: float = Field(default_factory=now)


MAX_DEAD_LETTER_PAYLOAD = 4096


class DeadLetter(Message):
    """A payload a service could not accept, with the reason, so nothing is silently dropped.

    Only the first `MAX_DEAD_LETTER_PAYLOAD` bytes are kept (as latin-1 text, which maps every
    byte) so a hostile payload cannot make the dead-letter topic itself a memory problem.
    """

    kind: Literal["dead_letter"] = "dead_letter"
    service: Name
    topic: str
    reason: str
    payload: str
    payload_size: int
    timestamp: float = Field(default_factory=now)

    @classmethod
    def of(cls, *, service: str, topic: str, reason: str, payload: bytes) -> DeadLetter:
        """Build a dead letter from raw bytes, truncating the kept payload."""
        return cls(
            service=service,
            topic=topic,
            reason=reason,
            payload=payload[:MAX_DEAD_LETTER_PAYLOAD].decode("latin-1"),
            payload_size=len(payload),
        )
