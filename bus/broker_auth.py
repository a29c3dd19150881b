"""Who may connect to the embedded broker: Mosquitto-format password hashes and amqtt plugins.

One password file serves both brokers: it is in Mosquitto's own format (``user:$7$...``,
PBKDF2-HMAC-SHA512, as ``mosquitto_passwd`` writes it); Mosquitto reads it natively and
`PasswordFileAuthPlugin` reads it for amqtt. `ClientCertAuthPlugin` makes a verified client
certificate the login, as Mosquitto's ``use_identity_as_username`` does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from bus.errors import BusError
from bus.login_throttle import LoginThrottle, LoginThrottleSettings

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
        self._decoy = hash_password(
            secrets.token_hex(8), iterations=_typical_iterations(self._users)
        )
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


def _typical_iterations(users: Mapping[str, str]) -> int:
    """The iteration count most of the file's hashes use (`mosquitto_passwd` writes 101).

    An unknown user is checked against a decoy hash of the same cost, so how long a refusal
    takes does not tell a guesser whether the username exists.
    """
    counts: dict[int, int] = {}
    for encoded in users.values():
        parts = encoded.split("$")
        if len(parts) == 5 and parts[2].isdigit() and 1 <= int(parts[2]) <= 10_000_000:
            counts[int(parts[2])] = counts.get(int(parts[2]), 0) + 1
    return max(counts, key=lambda n: counts[n]) if counts else PBKDF2_ITERATIONS
