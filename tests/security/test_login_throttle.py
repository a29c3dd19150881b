"""Login throttling on the embedded broker: a username or address that keeps failing is locked
out, refused without hashing, for a lock-out that doubles per further failure."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bus.broker import EmbeddedBroker
from bus.login_throttle import LoginThrottle, LoginThrottleSettings
from bus.ports import free_port
from bus.security import MqttSecuritySettings, PasswordFileAuthPlugin, write_password_file
from tests.security.brokers import PASSWORDS, login_once
from tests.support import wait_for_async

LOCKOUT = 0.3


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _throttle(clock: FakeClock, **overrides: Any) -> LoginThrottle:
    settings = LoginThrottleSettings(
        max_failures=3, lockout_initial=1.0, lockout_max=8.0, window=60.0, **overrides
    )
    return LoginThrottle(settings, clock=clock)


def test_lockout_starts_at_the_limit_doubles_per_failure_and_stops_at_the_cap() -> None:
    throttle = _throttle(FakeClock())
    assert [throttle.lockout(n) for n in range(1, 9)] == [0, 0, 1, 2, 4, 8, 8, 8]
    assert throttle.lockout(10**9) == 8.0  # no float overflow on absurd counts


def test_a_username_is_locked_after_the_limit_and_unlocked_after_the_lockout() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    for _ in range(2):
        throttle.failed("mapper-1", "10.0.0.7")
    assert throttle.locked_for("mapper-1", "10.0.0.8") == 0.0
    throttle.failed("mapper-1", "10.0.0.7")
    assert throttle.locked_for("mapper-1", "10.0.0.8") == 1.0  # per username, any address
    assert throttle.locked_for("twin", "10.0.0.7") == 1.0  # per address, any username
    assert throttle.locked_for("twin", "10.0.0.8") == 0.0
    clock.now += 1.0
    assert throttle.locked_for("mapper-1", "10.0.0.8") == 0.0
    throttle.failed("mapper-1", "10.0.0.9")  # one more failure: twice as long
    assert throttle.locked_for("mapper-1", None) == 2.0


def test_a_success_clears_the_username_but_not_the_address() -> None:
    throttle = _throttle(FakeClock())
    for _ in range(3):
        throttle.failed("mapper-1", "10.0.0.7")
    throttle.succeeded("mapper-1")
    assert throttle.locked_for("mapper-1", None) == 0.0
    assert throttle.locked_for(None, "10.0.0.7") == 1.0


def test_failures_are_forgotten_after_the_window() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    for _ in range(2):
        throttle.failed("mapper-1", None)
    clock.now += 61.0
    throttle.failed("mapper-1", None)
    assert throttle.locked_for("mapper-1", None) == 0.0


def test_loopback_is_not_locked_per_address_by_default() -> None:
    throttle = _throttle(FakeClock())
    for name in ("a", "b", "c", "d"):
        throttle.failed(name, "127.0.0.1")
    assert throttle.locked_for("e", "127.0.0.1") == 0.0


def test_the_table_stays_bounded_when_usernames_are_cycled() -> None:
    throttle = _throttle(FakeClock(), max_tracked=50, exempt_networks=())
    for number in range(10_000):
        throttle.failed(f"guess-{number}", f"10.1.{number // 256 % 256}.{number % 256}")
    assert len(throttle) <= 50


def test_disabled_throttle_never_locks() -> None:
    throttle = _throttle(FakeClock(), enabled=False)
    for _ in range(10):
        throttle.failed("mapper-1", "10.0.0.7")
    assert throttle.locked_for("mapper-1", "10.0.0.7") == 0.0


def test_settings_refuse_a_cap_below_the_first_lockout() -> None:
    with pytest.raises(ValidationError, match="lockout_max"):
        LoginThrottleSettings(lockout_initial=10.0, lockout_max=1.0)


# ---- against the real embedded broker -------------------------------------------------------


@contextlib.asynccontextmanager
async def _throttled(tmp_path: Path, *, exempt_loopback: bool) -> AsyncIterator[EmbeddedBroker]:
    """amqtt with passwords and a short lock-out after 3 failures."""
    security = MqttSecuritySettings(
        password_file=write_password_file(tmp_path / "passwd", PASSWORDS, iterations=1000),
        login_throttle=LoginThrottleSettings(
            max_failures=3,
            lockout_initial=LOCKOUT,
            lockout_max=4 * LOCKOUT,
            max_tracked=16,
            **({} if exempt_loopback else {"exempt_networks": ()}),
        ),
    )
    async with EmbeddedBroker(port=free_port(), security=security) as broker:
        yield broker


@pytest.fixture
async def throttled(tmp_path: Path) -> AsyncIterator[EmbeddedBroker]:
    """Throttled per username only: loopback (where the tests run) is exempt per address."""
    async with _throttled(tmp_path, exempt_loopback=True) as broker:
        yield broker


@pytest.fixture
async def throttled_loopback(tmp_path: Path) -> AsyncIterator[EmbeddedBroker]:
    """Throttled per username and per address, loopback included."""
    async with _throttled(tmp_path, exempt_loopback=False) as broker:
        yield broker


async def _logs_in_eventually(url: str, username: str, timeout: float = 5.0) -> None:
    """Poll single logins (a refused one while locked is not counted) until one succeeds."""
    await wait_for_async(
        lambda: login_once(url, username, PASSWORDS[username]), timeout, f"{username} logs in"
    )


def _plugin(broker: EmbeddedBroker) -> PasswordFileAuthPlugin:
    assert broker._broker is not None
    plugins = broker._broker.plugins_manager._plugins
    return next(p for p in plugins if isinstance(p, PasswordFileAuthPlugin))


async def test_the_right_password_is_refused_while_locked_and_accepted_after(
    throttled: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bus.login_throttle")
    for _ in range(3):
        assert not await login_once(throttled.url, "mapper-1", "wrong")
    assert not await login_once(throttled.url, "mapper-1", PASSWORDS["mapper-1"])
    lockouts = [r.getMessage() for r in caplog.records if "lock-out" in r.getMessage()]
    assert len(lockouts) == 1 and "'mapper-1'" in lockouts[0]
    assert "wrong" not in lockouts[0]
    await _logs_in_eventually(throttled.url, "mapper-1")
    assert len(_plugin(throttled).throttle) == 0  # the success cleared the record


async def test_a_locked_username_does_not_lock_out_another_user(
    throttled: EmbeddedBroker,
) -> None:
    for _ in range(3):
        assert not await login_once(throttled.url, "mapper-1", "wrong")
    assert not await login_once(throttled.url, "mapper-1", PASSWORDS["mapper-1"])
    assert await login_once(throttled.url, "twin", PASSWORDS["twin"])


async def test_an_address_that_keeps_failing_is_locked_for_every_username(
    throttled_loopback: EmbeddedBroker,
) -> None:
    url = throttled_loopback.url
    for name in ("guess-a", "guess-b", "guess-c"):
        assert not await login_once(url, name, "wrong")
    assert not await login_once(url, "twin", PASSWORDS["twin"])
    await _logs_in_eventually(url, "twin")


async def test_the_brokers_failure_table_stays_bounded_under_many_usernames(
    throttled: EmbeddedBroker,
) -> None:
    for number in range(40):
        assert not await login_once(throttled.url, f"cycled-{number}", "wrong")
    assert len(_plugin(throttled).throttle) == 16
    assert await login_once(throttled.url, "twin", PASSWORDS["twin"])
