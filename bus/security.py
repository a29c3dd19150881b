"""MQTT authentication and TLS settings, rendered for both brokers.

One `MqttSecuritySettings` secures the embedded amqtt broker (through the plugins of
`bus.broker_auth` and `bus.acl`) and Mosquitto (`write_mosquitto_config` produces a complete
secured setup from the same password file and `AclPolicy`).

Security is off by default so ``make demo`` needs nothing: the embedded broker then binds
127.0.0.1 and accepts anonymous clients. Setting ``password_file`` turns anonymous access off.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from bus.acl import AclPolicy, amqtt_plugin_config, render_mosquitto_acl
from bus.broker_auth import (
    PBKDF2_ITERATIONS,
    ClientCertAuthPlugin,
    PasswordFileAuthPlugin,
    SecurityConfigError,
    hash_password,
    read_password_file,
    verify_password,
    write_password_file,
)
from bus.login_throttle import LoginThrottleSettings
from bus.mqtt import DEFAULT_MAX_PACKET

__all__ = [
    "PBKDF2_ITERATIONS",
    "ClientCertAuthPlugin",
    "MqttCredentials",
    "MqttSecuritySettings",
    "MqttTlsSettings",
    "PasswordFileAuthPlugin",
    "SecurityConfigError",
    "client_tls_context",
    "exposure_warning",
    "hash_password",
    "is_loopback",
    "read_password_file",
    "verify_password",
    "write_mosquitto_config",
    "write_password_file",
]

log = logging.getLogger(__name__)

# ---- settings -----------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MqttTlsSettings(_Frozen):
    """A certificate and its key (PEM files): the broker's, or a client's for mutual TLS."""

    certfile: Path
    keyfile: Path


class MqttCredentials(_Frozen):
    """A service's login on the broker.

    `certificate` is presented when the broker requires client certificates
    (`MqttSecuritySettings.client_ca_file`); the broker then ignores the password and takes
    the certificate's common name as the username.
    """

    username: str
    password: SecretStr
    certificate: MqttTlsSettings | None = None


class MqttSecuritySettings(_Frozen):
    """Authentication, ACLs and TLS of the local MQTT fabric, composed into the edge config.

    Attributes:
        password_file: ``$7$`` password file; setting it turns anonymous access off.
        acl: per-user topic rules; None means every authenticated user may do anything.
        tls: certificate and key of the embedded broker's listener (it then speaks only TLS).
        ca_file: CA bundle clients use to verify the broker (``mqtts://`` URLs).
        client_ca_file: CA that signs client certificates; setting it (needs `tls`) makes
            the broker require a certificate it signed from every client (mutual TLS) and
            use the certificate's common name as the username the ACL sees; passwords are
            then not checked.
        clients: service name (``mappers``, ``twin``, ...) -> its credentials.
        login_throttle: lock-out of usernames/addresses that keep failing to log in
            (embedded broker only; Mosquitto has no equivalent).
    """

    password_file: Path | None = None
    acl: AclPolicy | None = None
    tls: MqttTlsSettings | None = None
    ca_file: Path | None = None
    client_ca_file: Path | None = None
    clients: dict[str, MqttCredentials] = {}
    login_throttle: LoginThrottleSettings = LoginThrottleSettings()

    @model_validator(mode="after")
    def _client_certs_need_tls(self) -> MqttSecuritySettings:
        if self.client_ca_file is not None and self.tls is None:
            raise ValueError("client_ca_file (client certificates) needs tls (certfile, keyfile)")
        return self

    @model_validator(mode="after")
    def _acl_needs_authentication(self) -> MqttSecuritySettings:
        # Without a login any client may claim any username, and the ACL would grant it
        # that user's rights: an ACL would then only look like security.
        if self.acl is not None and not self.authenticated:
            raise ValueError("acl needs password_file or client_ca_file (who the client is)")
        return self

    @field_validator("clients")
    @classmethod
    def _no_colons(cls, value: dict[str, MqttCredentials]) -> dict[str, MqttCredentials]:
        for creds in value.values():
            if ":" in creds.username or not creds.username:
                raise ValueError(f"username {creds.username!r} is empty or has ':'")
        return value

    @property
    def authenticated(self) -> bool:
        """Whether the broker refuses clients without a valid password or certificate."""
        return self.password_file is not None or self.client_ca_file is not None

    def credentials(self, service: str) -> MqttCredentials | None:
        """The login `service` should use, if one is configured."""
        return self.clients.get(service)

    def client_tls_context(self, service: str | None = None) -> ssl.SSLContext | None:
        """Context for ``mqtts://`` clients that trusts `ca_file` (None: system defaults).

        With `service`, the context also presents that service's client certificate, if its
        credentials name one.
        """
        if self.ca_file is None:
            return None
        creds = None if service is None else self.credentials(service)
        cert = None if creds is None else creds.certificate
        if cert is None:
            return client_tls_context(self.ca_file)
        return client_tls_context(self.ca_file, certfile=cert.certfile, keyfile=cert.keyfile)

    def amqtt_plugins(self) -> dict[str, Any]:
        """The ``plugins`` section of the embedded broker's amqtt config."""
        plugins: dict[str, Any]
        if self.client_ca_file is not None:
            plugins = {f"{ClientCertAuthPlugin.__module__}.ClientCertAuthPlugin": {}}
        elif self.password_file is None:
            plugins = {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            }
        else:
            plugins = {
                f"{PasswordFileAuthPlugin.__module__}.PasswordFileAuthPlugin": {
                    "password_file": str(self.password_file),
                    "throttle": self.login_throttle.model_dump(mode="json"),
                }
            }
        if self.acl is not None:
            plugins |= amqtt_plugin_config(self.acl)
        return plugins

    def amqtt_listener(self, host: str, port: int) -> dict[str, Any]:
        """The embedded broker's listener: plain TCP, or TLS when `tls` is set."""
        listener: dict[str, Any] = {"type": "tcp", "bind": f"{host}:{port}"}
        if self.tls is not None:
            listener |= {
                "ssl": True,
                "certfile": str(self.tls.certfile),
                "keyfile": str(self.tls.keyfile),
            }
            if self.client_ca_file is not None:
                # amqtt verifies a presented certificate against it (CERT_OPTIONAL);
                # ClientCertAuthPlugin refuses clients that present none.
                listener["cafile"] = str(self.client_ca_file)
        return listener


def client_tls_context(
    ca_file: Path, *, certfile: Path | None = None, keyfile: Path | None = None
) -> ssl.SSLContext:
    """A client context that verifies the broker's certificate and host name against `ca_file`.

    With `certfile` (and `keyfile`, unless the key is in the same PEM) the client presents
    that certificate, for brokers that require one (`MqttSecuritySettings.client_ca_file`).

    Raises:
        SecurityConfigError: the CA file, certificate or key cannot be read.
    """
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
        if certfile is not None:
            context.load_cert_chain(str(certfile), None if keyfile is None else str(keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise SecurityConfigError(f"CA file {ca_file} or client certificate: {exc}") from exc
    return context


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (``localhost``, 127/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, settings: MqttSecuritySettings) -> str | None:
    """The warning to shout when a broker listens beyond this machine without authentication."""
    if is_loopback(host) or settings.authenticated:
        return None
    return (
        f"SECURITY WARNING: the MQTT broker listens on {host}, reachable from the network, "
        "with anonymous access: anyone on the plant network can read every reading and "
        "write device set-points. Set broker.security.password_file (and acl, tls), or bind "
        "127.0.0.1."
    )


# ---- Mosquitto -----------------------------------------------------------------------------


def write_mosquitto_config(
    directory: Path,
    *,
    host: str,
    port: int,
    security: MqttSecuritySettings,
    run_as: str | None = None,
    extra: str = "",
    max_packet: int = DEFAULT_MAX_PACKET,
) -> Path:
    """Write ``mosquitto.conf`` (and its ``acl_file``) enforcing `security`; return its path.

    The password file is used as is: Mosquitto reads the same ``$7$`` format. Started as root,
    Mosquitto drops to the ``mosquitto`` user before reading the password and ACL files, so
    those must be readable by it, or `run_as` names the user to stay (tests pass "root").
    `max_packet` keeps a publisher from handing the broker a message no client can take: on a
    persistent MQTT 3.1.1 session (no way to announce a limit) it would drop the subscriber's
    connection on every reconnect.
    """
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"listener {port} {host}", "persistence false", f"max_packet_size {max_packet}"]
    if run_as is not None:
        lines.append(f"user {run_as}")
    lines.append(f"allow_anonymous {'false' if security.authenticated else 'true'}")
    if security.password_file is not None:
        lines.append(f"password_file {security.password_file}")
    if security.acl is not None:
        acl_file = directory / "acl"
        acl_file.write_text(render_mosquitto_acl(security.acl))
        os.chmod(acl_file, 0o600)
        lines.append(f"acl_file {acl_file}")
    if security.tls is not None:
        lines += [f"certfile {security.tls.certfile}", f"keyfile {security.tls.keyfile}"]
    if security.client_ca_file is not None:
        lines += [
            f"cafile {security.client_ca_file}",
            "require_certificate true",
            "use_identity_as_username true",
        ]
    conf = directory / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n" + extra)
    return conf
