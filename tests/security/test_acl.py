"""Per-client topic ACLs, one policy enforced identically by amqtt and Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bus.acl import (
    Access,
    AclPolicy,
    AclRule,
    app_rules,
    bridge_rules,
    edge_policy,
    filter_covers,
    policy,
    render_mosquitto_acl,
    topic_matches,
)
from bus.mqtt import MqttClient, SubscribeRefused
from bus.mqtt_connection import PublishRefused
from bus.security import MqttSecuritySettings
from bus.subscription import Subscription
from schemas import topics
from tests.security.brokers import SecureBroker, site_policy
from tests.support import wait_for


async def _publish_maybe_refused(client: MqttClient, topic: str, payload: bytes) -> bool:
    """Publish; True when the broker said no (MQTT v5 PUBACK >= 0x80; 3.1.1 cannot say)."""
    try:
        await client.publish(topic, payload)
    except PublishRefused:
        return True
    return False


async def _collect(sub: Subscription, into: list[tuple[str, bytes]]) -> None:
    async for message in sub:
        into.append((message.topic, message.payload))


async def test_mapper_cannot_publish_another_devices_readings(secured: SecureBroker) -> None:
    seen: list[tuple[str, bytes]] = []
    async with (
        secured.client("twin") as twin,
        secured.client("mapper-1") as mapper,
        twin.subscribe(topics.readings_filter()) as sub,
        asyncio.TaskGroup() as tg,
    ):
        task = tg.create_task(_collect(sub, seen))
        refused = await _publish_maybe_refused(mapper, topics.reading("plc-2", "t"), b"forged")
        await _publish_maybe_refused(mapper, topics.device_status("plc-2"), b"forged")
        await mapper.publish(topics.reading("plc-1", "t"), b"genuine")
        await wait_for(lambda: (topics.reading("plc-1", "t"), b"genuine") in seen)
        task.cancel()
    assert seen == [(topics.reading("plc-1", "t"), b"genuine")]
    assert refused == (mapper.protocol_version == "5")  # v5 tells the publisher why


async def test_app_cannot_write_desired_unless_granted(secured: SecureBroker) -> None:
    seen: list[tuple[str, bytes]] = []
    desired = topics.twin_desired_set("plc-1")
    async with (
        secured.client("twin") as twin,
        secured.client("app") as app,
        secured.client("operator") as operator,
        twin.subscribe(topics.twin_desired_set_filter()) as sub,
        asyncio.TaskGroup() as tg,
    ):
        task = tg.create_task(_collect(sub, seen))
        await _publish_maybe_refused(app, desired, b"from-app")
        await operator.publish(desired, b"from-operator")
        await wait_for(lambda: (desired, b"from-operator") in seen)
        task.cancel()
    assert seen == [(desired, b"from-operator")]


async def test_denied_subscription_receives_nothing(secured: SecureBroker) -> None:
    """The app may read twin documents but not device write commands; the mapper may.

    amqtt refuses the wider-than-granted filter outright (SUBACK 0x80, raised as
    SubscribeRefused); Mosquitto 2.0 accepts it but filters every message by the ACL.
    """
    app_seen: list[tuple[str, bytes]] = []
    mapper_seen: list[tuple[str, bytes]] = []
    write, document = topics.device_write("plc-1"), topics.twin_document("plc-1")
    async with (
        secured.client("twin") as twin,
        secured.client("app") as app,
        secured.client("mapper-1") as mapper,
        contextlib.AsyncExitStack() as stack,
    ):
        try:
            denied = await stack.enter_async_context(app.subscribe("ef/devices/+/write"))
        except SubscribeRefused:
            assert secured.kind == "amqtt"
            denied = None
        allowed = await stack.enter_async_context(app.subscribe(document))
        control = await stack.enter_async_context(mapper.subscribe(write))
        async with asyncio.TaskGroup() as tg:
            subs = [(allowed, app_seen), (control, mapper_seen)]
            if denied is not None:
                subs.append((denied, app_seen))
            tasks = [tg.create_task(_collect(sub, seen)) for sub, seen in subs]
            await twin.publish(write, b"set 42")
            await twin.publish(document, b"doc")
            await wait_for(lambda: (document, b"doc") in app_seen and mapper_seen)
            for task in tasks:
                task.cancel()
    assert app_seen == [(document, b"doc")]
    assert mapper_seen == [(write, b"set 42")]


# ---- the model ------------------------------------------------------------------------------


def test_policy_renders_as_a_mosquitto_acl_file_with_nothing_for_anonymous() -> None:
    text = render_mosquitto_acl(site_policy())
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert body[0].startswith("user ")  # no rule before the first user: anonymous gets none
    assert "user mapper-1" in body
    assert "topic write ef/readings/plc-1/+" in body
    assert "topic read ef/devices/plc-1/write" in body


def test_read_only_app_may_subscribe_narrowly_but_not_widely() -> None:
    acl = policy({"app": app_rules("app")})
    assert acl.may_subscribe("app", "ef/twin/plc-1/document")
    assert acl.may_subscribe("app", "ef/twin/+/document")
    assert not acl.may_subscribe("app", "ef/twin/#")
    assert not acl.may_subscribe("app", "#")
    assert not acl.may_publish("app", "ef/twin/plc-1/desired/set")
    assert not acl.may_receive(None, "ef/readings/plc-1/t")
    granted = policy({"app": app_rules("app", twin_write=True)})
    assert granted.may_publish("app", "ef/twin/plc-1/desired/set")


def test_filters_with_spaces_or_bad_wildcards_are_refused() -> None:
    for bad in ("ef/a b", "ef/#/x", "ef/a+", "", "ef/\n"):
        with pytest.raises(ValueError, match="ACL filter"):
            AclRule(access=Access.READ, topic=bad)
    with pytest.raises(ValueError, match="username"):
        AclPolicy(clients={"bad user": ()})


_level = st.sampled_from(["a", "b", "c"])
_topic = st.lists(_level, min_size=1, max_size=4).map("/".join)
_filter = st.lists(st.sampled_from(["a", "b", "+"]), min_size=1, max_size=4).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"])])
)


@settings(max_examples=200, deadline=None)
@given(outer=_filter, inner=_filter, topic=_topic)
def test_a_covered_filter_never_reaches_a_topic_its_cover_does_not(
    outer: str, inner: str, topic: str
) -> None:
    if filter_covers(outer, inner) and topic_matches(inner, topic):
        assert topic_matches(outer, topic)


@settings(max_examples=100, deadline=None)
@given(filter_=_filter)
def test_every_filter_covers_itself_and_hash_covers_all(filter_: str) -> None:
    assert filter_covers(filter_, filter_)
    assert filter_covers("#", filter_)


def test_bridge_acl_reads_every_uplink_route_and_nothing_raw() -> None:
    from cloud_bridge.routes import UPLINK_ROUTES

    acl = policy({"bridge": bridge_rules()})
    for topic_filter, _ in UPLINK_ROUTES:
        assert acl.may_subscribe("bridge", topic_filter), topic_filter
    assert not acl.may_subscribe("bridge", topics.readings_filter())  # raw data stays on site
    assert acl.may_publish("bridge", topics.model_update("m1"))
    assert acl.may_publish("bridge", topics.twin_desired_set("plc-1"))
    assert not acl.may_publish("bridge", topics.device_write("plc-1"))


def test_edge_policy_lets_each_service_answer_where_the_others_ask() -> None:
    """The twin asks mappers to answer device writes on its own replies topic; offload answers
    on inference replies; nobody may write what only another role writes."""
    acl = edge_policy(["plc-1"])
    assert acl.may_publish("mappers", topics.twin_reply("twin-writes"))
    assert acl.may_receive("twin", topics.twin_reply("twin-writes"))
    assert acl.may_publish("mappers", topics.reading("plc-1", "t"))
    assert not acl.may_publish("mappers", topics.reading("plc-2", "t"))
    assert acl.may_publish("offload", topics.infer_reply("phone"))
    assert not acl.may_publish("offload", topics.model_update("m"))
    assert acl.may_publish("bridge", topics.fl_global("job"))
    assert not acl.may_publish("fl-trainer", topics.fl_global("job"))


def test_an_acl_without_authentication_is_refused_at_start_up() -> None:
    """Anyone could claim the bridge's username, and the ACL would grant its rights."""
    with pytest.raises(ValidationError, match="acl needs password_file or client_ca_file"):
        MqttSecuritySettings(acl=edge_policy(["plc-1"]))
