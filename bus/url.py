"""Broker URLs as users write them: ``mqtt://host:port`` and ``mqtts://host:port``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from bus.errors import InvalidBrokerUrl

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "tcp": 1883}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where an MQTT broker listens, and the credentials in its URL if any."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        """The URL without credentials (safe to log)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Read a broker URL.

    Raises:
        InvalidBrokerUrl: unknown scheme, no host, or a port outside 1-65535.

    """
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise InvalidBrokerUrl(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise InvalidBrokerUrl(f"broker URL {url!r} has no host")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise InvalidBrokerUrl(f"broker URL {url!r} has an invalid port") from exc
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
