"""MQTT authentication and TLS: settings, password files, and the amqtt auth plugin.

One password file serves both brokers: it is in Mosquitto's own format (``user:$7$...``,
PBKDF2-HMAC-SHA512, as ``mosquitto_passwd`` writes it), Mosquitto reads it natively and
`PasswordFileAuthPlugin` reads it for the embedded amqtt broker. One `AclPolicy` (bus.acl)
likewise renders for both. `write_mosquitto_config` produces a complete secured Mosquitto setup.

Security is off by default so ``make demo`` needs nothing: the embedded broker then binds
127.0.0.1 and accepts anonymous clients. Setting ``password_file`` turns anonymous access off.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from bus.acl import AclPolicy, amqtt_plugin_config, render_mosquitto_acl
from bus.errors import BusError
from bus.login_throttle import LoginThrottle, LoginThrottleSettings
from bus.mqtt import DEFAULT_MAX_PACKET

log = logging.getLogger(__name__)

PBKDF2_ITERATIONS = 20_000
"""Iterations for new hashes. Mosquitto 2.0 writes 101 by default; it verifies any count, and
20,000 rounds of SHA-512 cost about 10 ms per connect here, which only a password guesser feels."""

_SALT_BYTES = 12  # what mosquitto_passwd uses
_HASH_PREFIX = "$7$"


class SecurityConfigError(BusError):
    """A password file, certificate or security setting that cannot be used."""


# ---- password hashes (Mosquitto "$7$" format) ---------------------------------------------


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Hash `password` as Mosquitto does: ``$7$<iterations>$<b64 salt>$<b64 pbkdf2-sha512>``."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return (
        f"{_HASH_PREFIX}{iterations}${base64.b64encode(salt).decode()}"
        f"${base64.b64encode(digest).decode()}"
    )


def verify_password(password: str, encoded: str) -> bool:
    """Check `password` against a ``$7$`` hash in constant time; malformed hashes never match."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    if not 1 <= iterations <= 10_000_000:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)


def read_password_file(path: Path) -> dict[str, str]:
    """Read ``user:hash`` lines (``#`` comments and blank lines skipped).

    Raises:
        SecurityConfigError: unreadable file, or a line that is not ``user:$7$...``.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise SecurityConfigError(f"password file {path}: {exc}") from exc
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, encoded = line.partition(":")
        if not sep or not username or not encoded.startswith(_HASH_PREFIX):
            raise SecurityConfigError(
                f"password file {path}, line {number}: expected user:$7$... "
                "(Mosquitto PBKDF2-SHA512 hashes; other formats are not supported)"
            )
        users[username] = encoded
    return users


def write_password_file(
    path: Path, users: Mapping[str, str], *, iterations: int = PBKDF2_ITERATIONS
) -> Path:
    """Write username -> plaintext password as a hashed password file readable only by us."""
    lines = []
    for username, password in users.items():
        if not username or ":" in username or any(ch.isspace() for ch in username):
            raise SecurityConfigError(f"username {username!r} cannot go in a password file")
        lines.append(f"{username}:{hash_password(password, iterations=iterations)}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


class PasswordFileAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    """amqtt auth plugin: a client must present a username and password from the file.

    Hashing runs in a thread so a burst of connects (or a guesser) cannot stall the broker's
    event loop; unknown users cost the same hash as known ones, so timing does not reveal them.
    A username or peer address that keeps failing is locked out (`LoginThrottle`): attempts
    are then refused without hashing.
    """

    @dataclass
    class Config:
        """Path of the ``$7$`` password file and `LoginThrottleSettings` as a dict."""

        password_file: str = ""
        throttle: dict[str, Any] = field(default_factory=dict)

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._users = read_password_file(Path(context.config.password_file))
        self._decoy = hash_password(secrets.token_hex(8))
        self.throttle = LoginThrottle(LoginThrottleSettings.model_validate(context.config.throttle))

    async def authenticate(self, *, session: Session) -> bool:
        """Accept only a known username with its password; anonymous clients are refused."""
        username, password = session.username, session.password
        if not username or password is None:
            return False
        address = session.remote_address
        if self.throttle.locked_for(username, address) > 0:
            log.debug("login as %r from %s refused unhashed: locked out", username, address)
            return False
        encoded = self._users.get(username, self._decoy)
        ok = await asyncio.to_thread(verify_password, password, encoded)
        ok = ok and username in self._users
        if ok:
            self.throttle.succeeded(username)
        else:
            self.throttle.failed(username, address)
        return ok


class ClientCertAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    """amqtt auth plugin for mutual TLS: a verified client certificate is the login.

    The listener verifies the certificate against its ``cafile`` during the handshake (a
    certificate from another CA fails it); this plugin refuses clients that sent none, and
    makes the certificate's common name the username the ACL sees, as Mosquitto's
    ``use_identity_as_username`` does. A password, if sent, is ignored.
    """

    async def authenticate(self, *, session: Session) -> bool:
        """Accept a client whose verified certificate names it; take that name as username."""
        ssl_object = session.ssl_object
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        name = _common_name(cert) if cert else None
        if name is None:
            log.info("client from %s refused: no client certificate", session.remote_address)
            return False
        session.username = name
        return True


def _common_name(cert: dict[str, Any]) -> str | None:
    """The subject's CN from `ssl.SSLSocket.getpeercert()` output (first one wins)."""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and value:
                return str(value)
    return None


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
            plugins = {f"{__name__}.ClientCertAuthPlugin": {}}
        elif self.password_file is None:
            plugins = {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            }
        else:
            plugins = {
                f"{__name__}.PasswordFileAuthPlugin": {
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
