"""The MQTT client every service uses, against amqtt (3.1.1) and Mosquitto (v5)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from bus.broker import EmbeddedBroker
from bus.errors import InvalidBrokerUrl, NotConnected
from bus.mqtt import ConnectionState, MqttClient
from bus.ports import free_port
from bus.subscription import Overflow
from bus.url import parse_broker_url
from tests.conftest import _wait_port, require_mosquitto_tool
from tests.support import wait_for


async def _next(sub, timeout: float = 5.0):
    async with asyncio.timeout(timeout):
        return await anext(sub)


async def test_publish_and_subscribe_round_trip_at_qos1(broker_url: str):
    async with MqttClient(broker_url, client_id="rt", protocol="auto") as client:
        async with client.subscribe("t/rt/#") as sub:
            await client.publish("t/rt/1", b"hello")
            message = await _next(sub)
    assert (message.topic, message.payload, message.qos) == ("t/rt/1", b"hello", 1)


async def test_uses_v5_on_mosquitto_and_falls_back_to_311_on_amqtt(amqtt_url, mosquitto_url):
    async with MqttClient(amqtt_url, client_id="p1") as on_amqtt:
        assert on_amqtt.protocol_version == "3.1.1"
    async with MqttClient(mosquitto_url, client_id="p2") as on_mosquitto:
        assert on_mosquitto.protocol_version == "5"


async def test_v5_response_topic_and_correlation_data_reach_the_subscriber(mosquitto_url):
    async with MqttClient(mosquitto_url, client_id="v5") as client:
        async with client.subscribe("req/#") as sub:
            await client.publish("req/1", b"{}", response_topic="rep/1", correlation_data=b"c1")
            message = await _next(sub)
    assert message.response_topic == "rep/1"
    assert message.correlation_data == b"c1"


async def test_a_v5_broker_never_sends_a_packet_over_our_limit(mosquitto_url):
    """Announced in CONNECT: Mosquitto discards the big message for us instead of sending it,
    which would drop the connection and, on a persistent session, come back on every
    reconnect."""
    async with (
        MqttClient(mosquitto_url, client_id="small", clean_session=False, max_packet=4096) as small,
        small.subscribe("big/#") as sub,
        MqttClient(mosquitto_url, client_id="sender") as sender,
    ):
        await sender.publish("big/1", bytes(10_000))
        await sender.publish("big/2", b"fits")
        message = await _next(sub)
        assert (message.topic, message.payload) == ("big/2", b"fits")
        assert small.connects == 1
        assert small.state is ConnectionState.CONNECTED


async def test_a_full_drop_oldest_inbox_keeps_the_newest_and_counts_the_rest(amqtt_url):
    async with MqttClient(amqtt_url, client_id="drop") as client:
        async with client.subscribe("d/#", maxsize=2, overflow=Overflow.DROP_OLDEST) as sub:
            for i in range(5):
                await client.publish(f"d/{i}", str(i).encode())
            await wait_for(lambda: sub.dropped == 3, what="three dropped")
            kept = [(await _next(sub)).payload, (await _next(sub)).payload]
    assert kept == [b"3", b"4"]


async def test_entering_fails_fast_with_a_clear_error_when_no_broker_listens():
    port = free_port()
    with pytest.raises(NotConnected, match=str(port)):
        async with MqttClient(f"mqtt://127.0.0.1:{port}", client_id="x", connect_timeout=0.5):
            pass


async def test_subscriptions_survive_a_broker_restart():
    port = free_port()
    async with EmbeddedBroker(port=port) as broker:
        client = MqttClient(broker.url, client_id="survivor", backoff_max=0.2)
        await client.__aenter__()
    try:
        async with client.subscribe("s/#") as sub:
            await wait_for(lambda: client.state is not ConnectionState.CONNECTED, what="drop")
            async with EmbeddedBroker(port=port), MqttClient(broker.url, client_id="pub") as pub:
                await client.wait_connected(10)
                assert client.connects >= 2
                await pub.publish("s/1", b"after restart")
                message = await _next(sub)
        assert message.payload == b"after restart"
    finally:
        await client.__aexit__(None, None, None)


async def test_publish_while_the_broker_is_gone_raises_instead_of_hanging():
    port = free_port()
    async with EmbeddedBroker(port=port) as broker:
        client = MqttClient(broker.url, client_id="orphan", publish_timeout=0.3)
        await client.__aenter__()
    try:
        await wait_for(lambda: client.state is not ConnectionState.CONNECTED, what="drop")
        with pytest.raises(NotConnected):
            await client.publish("x", b"y")
    finally:
        await client.__aexit__(None, None, None)


async def test_unacked_messages_are_redelivered_to_a_persistent_manual_ack_session(
    tmp_path: Path,
):
    binary = require_mosquitto_tool()
    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    process = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        url = f"mqtt://127.0.0.1:{port}"
        opts = {"client_id": "durable", "clean_session": False, "manual_ack": True}
        async with MqttClient(url, **opts) as durable, MqttClient(url, client_id="p") as pub:
            async with durable.subscribe("q/#") as sub:
                await pub.publish("q/1", b"keep me")
                first = await _next(sub)  # received, deliberately never acked
        assert first.payload == b"keep me"
        async with MqttClient(url, **opts) as durable, durable.subscribe("q/#") as sub:
            again = await _next(sub)
            again.ack()
        assert again.payload == b"keep me"
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://h:1", ("h", 1, False)),
        ("mqtts://h", ("h", 8883, True)),
        ("mqtt://u:p%40ss@h:2", ("h", 2, False)),
    ],
)
def test_broker_urls_are_parsed(url: str, expected: tuple[str, int, bool]):
    address = parse_broker_url(url)
    assert (address.host, address.port, address.tls) == expected


@pytest.mark.parametrize("url", ["http://h:1", "mqtt://", "mqtt://h:99999", "h:1883"])
def test_bad_broker_urls_are_refused_with_the_url_named(url: str):
    with pytest.raises(InvalidBrokerUrl):
        parse_broker_url(url)


async def test_a_full_inbox_never_blocks_the_acknowledgement_of_our_own_publishes(broker_url):
    """A service that publishes while its inbox is full must not deadlock (flow control is
    done by withholding acks of inbound messages, not by ceasing to read the socket)."""
    async with MqttClient(broker_url, client_id="busy") as client:
        async with client.subscribe("full/#", maxsize=1) as sub:
            for i in range(50):
                await client.publish(f"full/{i}", b"x")
            # The inbox holds one message and the rest wait; publishing still completes.
            await client.publish("other/topic", b"still acked", timeout=5)
            received = [(await _next(sub)).topic for _ in range(50)]
    assert received == [f"full/{i}" for i in range(50)]
