"""Login throttling for the embedded broker: lock out a username or address that keeps failing.

PBKDF2 makes each guess cost the broker ~10 ms of CPU; without a limit a guesser can still try
100 passwords a second per core, and every try burns that CPU. `LoginThrottle` counts failed
logins per username and per peer address; after `max_failures` of them a further attempt is
refused *without hashing* until a lock-out passes. Each failure after that doubles the
lock-out up to `lockout_max`. Attempts made while locked are refused but not counted, so a
service retrying with back-off is let in soon after its password is fixed.

Trade-offs, on purpose:
- A success clears the username's record, not the address's: a client holding one valid
  login cannot launder guesses at other accounts through its own address.
- Anyone who knows a username can keep that account locked out (a denial of service, as with
  any lock-out); connected sessions are not affected, only new connects.
- Loopback addresses are exempt from the per-address count by default: every edge service
  connects from 127.0.0.1, and one service with a wrong password must not lock out the rest.
- Memory is bounded: at most `max_tracked` records; the least recently failed is evicted
  first, so an attacker cycling usernames (or addresses) forgets its own oldest records.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class LoginThrottleSettings(BaseModel):
    """How the embedded broker slows down password guessing (Mosquitto has no equivalent).

    Attributes:
        enabled: False turns throttling off (every attempt is hashed, as before).
        max_failures: failed logins (per username, and per address) before a lock-out.
        window: seconds a record is remembered after its last failure or lock-out ends.
        lockout_initial: the first lock-out, in seconds; doubled per further failure.
        lockout_max: the longest lock-out, in seconds.
        max_tracked: most usernames + addresses remembered (oldest evicted first).
        exempt_networks: addresses never locked out per address (per-username still applies).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    max_failures: int = Field(default=5, ge=1, le=1000)
    window: float = Field(default=600.0, gt=0, le=86_400)
    lockout_initial: float = Field(default=1.0, gt=0, le=3600)
    lockout_max: float = Field(default=300.0, gt=0, le=86_400)
    max_tracked: int = Field(default=10_000, ge=2, le=10_000_000)
    exempt_networks: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )

    @model_validator(mode="after")
    def _ordered(self) -> LoginThrottleSettings:
        if self.lockout_max < self.lockout_initial:
            raise ValueError(
                f"lockout_max ({self.lockout_max}) is below lockout_initial "
                f"({self.lockout_initial})"
            )
        return self


@dataclass
class _Record:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Failure records per username and per address, with exponential lock-outs.

    Not thread-safe: the broker calls it from its event loop only.

    Args:
        settings: limits and periods.
        clock: monotonic seconds; tests pass a fake one.
    """

    def __init__(
        self, settings: LoginThrottleSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def _keys(self, username: str | None, address: str | None) -> list[tuple[str, str]]:
        keys = [] if username is None else [("user", username)]
        if address is not None and not self._exempt(address):
            keys.append(("addr", address))
        return keys

    def _exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.settings.exempt_networks)

    def _live(self, key: tuple[str, str], now: float) -> _Record | None:
        record = self._records.get(key)
        if record is None:
            return None
        if now > max(record.last_failure, record.locked_until) + self.settings.window:
            del self._records[key]
            return None
        return record

    def locked_for(self, username: str | None, address: str | None) -> float:
        """Seconds until an attempt as `username` from `address` may be hashed (0: now)."""
        if not self.settings.enabled:
            return 0.0
        now = self._clock()
        waits = [
            record.locked_until - now
            for key in self._keys(username, address)
            if (record := self._live(key, now)) is not None
        ]
        return max([0.0, *waits])

    def failed(self, username: str | None, address: str | None) -> None:
        """Record a failed login; start (and log once) a lock-out when one is due."""
        if not self.settings.enabled:
            return
        now = self._clock()
        for key in self._keys(username, address):
            record = self._live(key, now) or _Record()
            record.failures += 1
            record.last_failure = now
            lockout = self.lockout(record.failures)
            if lockout > 0:
                record.locked_until = now + lockout
                kind, value = key
                log.warning(
                    "MQTT login lock-out: %s %r refused for %.1f s after %d failed logins",
                    "username" if kind == "user" else "address",
                    value,
                    lockout,
                    record.failures,
                )
            self._records[key] = record
            self._records.move_to_end(key)
        while len(self._records) > self.settings.max_tracked:
            self._records.popitem(last=False)

    def succeeded(self, username: str | None) -> None:
        """Forget the username's failures (its address's age out: see the module notes)."""
        if username is not None:
            self._records.pop(("user", username), None)

    def lockout(self, failures: int) -> float:
        """The lock-out after the `failures`-th failure: 0 below the limit, then doubling."""
        beyond = failures - self.settings.max_failures
        if beyond < 0:
            return 0.0
        # Cap the exponent first: 2**beyond for a huge count would overflow a float.
        doublings = min(beyond, 64)
        return min(self.settings.lockout_max, self.settings.lockout_initial * 2.0**doublings)
