"""The embedded MQTT broker (amqtt) the edge starts when no external broker is configured."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Self

from amqtt.broker import Broker

from bus.security import MqttSecuritySettings, exposure_warning

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """amqtt on 127.0.0.1, MQTT 3.1.1 only, anonymous by default.

    It exists so `make demo` needs nothing installed; production sites point the edge at
    Mosquitto (``broker.url``), which is faster and speaks v5. With `security` it checks
    passwords (anonymous off), enforces the ACL and speaks only TLS when a certificate is set.
    Binding a non-loopback address without authentication logs a loud warning.

    Args:
        host: address to bind; loopback unless the site means to expose it.
        port: TCP port (use 0-free ports in tests).
        security: authentication, ACL and TLS; the default is anonymous plain TCP.

    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        security: MqttSecuritySettings | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security or MqttSecuritySettings()
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        """URL clients connect to."""
        scheme = "mqtts" if self.security.tls is not None else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": self.security.amqtt_listener(self.host, self.port)},
            # Only the plugins we want: amqtt's defaults add packet logging and $SYS chatter.
            "plugins": self.security.amqtt_plugins(),
        }

    async def __aenter__(self) -> Self:
        warning = exposure_warning(self.host, self.security)
        if warning is not None:
            log.warning(warning)
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
