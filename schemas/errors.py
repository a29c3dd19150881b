"""Errors raised while building or reading messages, topics and subjects."""

from __future__ import annotations


class EdgefabricError(Exception):
    """The one base of every error edgefabric raises on purpose."""


class SchemaError(EdgefabricError):
    """A payload could not be read as the message it claims to be.

    Attributes:
        reason: what was wrong, fit to put on the dead-letter topic.

    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidName(EdgefabricError, ValueError):
    """A name would break a topic or subject (wildcard, separator, control character, empty)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"name {name!r} {problem}")
        self.name = name
        self.problem = problem
