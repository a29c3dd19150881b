"""Errors of the bus: typed, so callers can tell 'broker down' from 'bad URL' from 'too slow'."""

from __future__ import annotations

from schemas.errors import EdgefabricError


class BusError(EdgefabricError):
    """Base of every bus error."""


class InvalidBrokerUrl(BusError, ValueError):
    """A broker URL that is not ``mqtt://host:port`` (or ``mqtts://``)."""


class NotConnected(BusError):
    """The broker is unreachable right now; the operation failed fast instead of hanging."""


class RequestTimeout(BusError):
    """A request/response exchange got no answer within its deadline."""


class NatsServerError(BusError):
    """A `nats-server` child process could not be found, started or reached."""
