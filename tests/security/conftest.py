"""Fixtures of the security tests: a secured broker of each kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.security.brokers import SecureBroker, secure_broker


@pytest.fixture(params=["amqtt", "mosquitto"])
async def secured(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SecureBroker]:
    """A broker with passwords and the site ACL (plain TCP), parametrised over both brokers."""
    async with secure_broker(request.param, tmp_path) as broker:
        yield broker


@pytest.fixture(params=["amqtt", "mosquitto"])
async def secured_tls(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SecureBroker]:
    """A broker with passwords, the site ACL and a TLS-only listener, over both brokers."""
    async with secure_broker(request.param, tmp_path, tls=True) as broker:
        yield broker
