"""The embedded MQTT broker (amqtt) the edge starts when no external broker is configured."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Self

from amqtt.broker import Broker

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """amqtt on 127.0.0.1, MQTT 3.1.1 only, anonymous by default.

    It exists so `make demo` needs nothing installed; production sites point the edge at
    Mosquitto (``broker.url``), which is faster and speaks v5.

    Args:
        host: address to bind; loopback unless the site means to expose it.
        port: TCP port (use 0-free ports in tests).

    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        """URL clients connect to."""
        return f"mqtt://{self.host}:{self.port}"

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Only the plugins we want: amqtt's defaults add packet logging and $SYS chatter.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    async def __aenter__(self) -> Self:
        # amqtt logs every connect/disconnect at INFO; keep the edge's log readable.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        self._broker = Broker(self._config())
        await self._broker.start()
        log.info("embedded MQTT broker listening on %s", self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
