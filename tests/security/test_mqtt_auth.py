"""Authentication and TLS on the embedded broker and on Mosquitto, from one settings model."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path

import pytest

from bus.broker import EmbeddedBroker
from bus.broker_auth import PBKDF2_ITERATIONS, _typical_iterations
from bus.errors import BusError, NotConnected
from bus.mqtt import MqttClient
from bus.ports import free_port
from bus.security import (
    MqttSecuritySettings,
    exposure_warning,
    hash_password,
    read_password_file,
    verify_password,
    write_mosquitto_config,
)
from tests.conftest import require_mosquitto_tool
from tests.security.brokers import SecureBroker, run_mosquitto
from tests.support import wait_for


async def _round_trip(broker: SecureBroker, username: str) -> None:
    """`username` publishes its own device's reading and reads it back."""
    topic = "ef/readings/plc-1/temperature"
    async with broker.client("twin") as reader, broker.client(username) as writer:
        async with reader.subscribe("ef/readings/+/+") as sub:
            await writer.publish(topic, b"21.5")
            async for message in sub:
                assert (message.topic, message.payload) == (topic, b"21.5")
                break


async def test_right_password_connects_and_messages_flow(secured: SecureBroker) -> None:
    await _round_trip(secured, "mapper-1")


async def test_wrong_password_cannot_connect(secured: SecureBroker) -> None:
    with pytest.raises(NotConnected):
        async with secured.client("mapper-1", "not-the-password", connect_timeout=1.5):
            pass


async def test_unknown_user_cannot_connect(secured: SecureBroker) -> None:
    with pytest.raises(NotConnected):
        async with secured.client("intruder", "guess", connect_timeout=1.5):
            pass


async def test_anonymous_is_refused_once_security_is_on(secured: SecureBroker) -> None:
    with pytest.raises(NotConnected):
        async with secured.client(None, connect_timeout=1.5):
            pass


async def test_tls_listener_carries_authenticated_traffic(secured_tls: SecureBroker) -> None:
    assert secured_tls.url.startswith("mqtts://")
    await _round_trip(secured_tls, "mapper-1")


async def test_client_that_does_not_trust_the_ca_cannot_connect(
    secured_tls: SecureBroker,
) -> None:
    # trust_ca=False: the system CA store, which never signed our test CA.
    with pytest.raises(NotConnected):
        async with secured_tls.client("mapper-1", trust_ca=False, connect_timeout=1.5):
            pass


async def test_plaintext_client_cannot_talk_to_the_tls_listener(
    secured_tls: SecureBroker,
) -> None:
    plain = SecureBroker(secured_tls.kind, secured_tls.url.replace("mqtts", "mqtt"), None)
    with pytest.raises(NotConnected):
        async with plain.client("mapper-1", connect_timeout=1.5):
            pass


async def test_embedded_broker_accepts_a_mosquitto_passwd_file(tmp_path: Path) -> None:
    tool = require_mosquitto_tool("mosquitto_passwd")
    passwd = tmp_path / "from-mosquitto"
    subprocess.run(  # noqa: S603 - fixed tool and arguments
        [tool, "-c", "-b", str(passwd), "ops", "ops-secret"], check=True
    )
    assert verify_password("ops-secret", read_password_file(passwd)["ops"])
    security = MqttSecuritySettings(password_file=passwd)
    async with EmbeddedBroker(port=free_port(), security=security) as embedded:
        plain = SecureBroker("amqtt", embedded.url, None)
        async with plain.client("ops", "ops-secret") as client:
            assert client.protocol_version == "3.1.1"
        with pytest.raises(NotConnected):
            async with plain.client("ops", "wrong", connect_timeout=1.5):
                pass


def test_password_hashes_are_salted_and_verify_only_the_right_password() -> None:
    first = hash_password("s3cret", iterations=1000)
    second = hash_password("s3cret", iterations=1000)
    assert first != second
    assert verify_password("s3cret", first)
    assert not verify_password("s3cret!", first)
    assert not verify_password("s3cret", "$7$1000$not-base64!$x")
    assert not verify_password("s3cret", "plaintext")


def test_exposed_broker_without_auth_gets_a_loud_warning(tmp_path: Path) -> None:
    open_settings = MqttSecuritySettings()
    assert exposure_warning("127.0.0.1", open_settings) is None
    assert exposure_warning("localhost", open_settings) is None
    warning = exposure_warning("0.0.0.0", open_settings)  # noqa: S104 - the case under test
    assert warning is not None
    assert "SECURITY WARNING" in warning
    locked = MqttSecuritySettings(password_file=tmp_path / "passwd")
    assert exposure_warning("192.168.1.10", locked) is None


async def test_embedded_default_stays_anonymous_on_loopback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="bus.broker"):
        async with EmbeddedBroker(port=free_port()) as broker:
            plain = SecureBroker("amqtt", broker.url, None)
            async with plain.client(None) as client:
                await wait_for(lambda: client.protocol_version == "3.1.1")
    assert broker.url.startswith("mqtt://127.0.0.1:")
    assert not [r for r in caplog.records if "SECURITY WARNING" in r.getMessage()]


async def test_mosquitto_as_we_configure_it_refuses_a_packet_no_client_can_take(
    tmp_path: Path,
) -> None:
    """A persistent 3.1.1 subscriber cannot announce a limit; the broker's own cap protects it."""
    require_mosquitto_tool()
    port = free_port()
    conf = write_mosquitto_config(
        tmp_path, host="127.0.0.1", port=port, security=MqttSecuritySettings(), max_packet=4096,
        run_as="root" if os.geteuid() == 0 else None,
    )  # fmt: skip
    url = f"mqtt://127.0.0.1:{port}"
    with run_mosquitto(conf, port):
        async with (
            MqttClient(
                url, client_id="sub", clean_session=False, protocol="3.1.1", max_packet=8192
            ) as sub_bus,
            sub_bus.subscribe("big/#") as sub,
        ):
            async with MqttClient(url, client_id="big", protocol="3.1.1") as sender:
                with pytest.raises(BusError):
                    await sender.publish("big/1", bytes(10_000), timeout=2)
            async with MqttClient(url, client_id="small") as sender:
                await sender.publish("big/2", b"fits")
            async with asyncio.timeout(5):
                message = await anext(sub)
            assert (message.topic, message.payload) == ("big/2", b"fits")
            assert sub_bus.connects == 1


def test_the_decoy_hash_costs_what_the_files_hashes_cost() -> None:
    """With mosquitto_passwd's 101 iterations, a 20,000-iteration decoy would make unknown
    usernames 200x slower to refuse than known ones: a username oracle."""
    users = {"a": hash_password("x", iterations=101), "b": hash_password("y", iterations=101)}
    assert _typical_iterations(users) == 101
    assert _typical_iterations({}) == PBKDF2_ITERATIONS
