"""Per-client topic ACLs, written once and rendered for both brokers.

An `AclPolicy` lists, per MQTT username, which topic filters it may read and write. The same
policy becomes a Mosquitto ``acl_file`` (`render_mosquitto_acl`) and the config of `AclPlugin`,
our amqtt topic-check plugin (`amqtt_plugin_config`), so the embedded broker and Mosquitto
enforce the same rules. The role builders (`mapper_rules`, `twin_rules`, `app_rules`, ...) spell
every filter through `schemas.topics`, so a renamed topic cannot silently escape its ACL.

Semantics (matching Mosquitto's):
    publish    allowed when the topic matches a ``write`` filter of the user;
    receive    a message is delivered only when its topic matches a ``read`` filter;
    subscribe  amqtt: allowed when every topic the filter can match is readable (a filter
               wider than the grant is refused with SUBACK 0x80). Mosquitto 2.0 accepts such a
               subscription but still filters every message by ``read`` at delivery.
Anonymous clients (no username) get nothing once a policy is in force.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseTopicPlugin
from amqtt.session import Session
from pydantic import BaseModel, ConfigDict, field_validator

from schemas import topics

AMQTT_PLUGIN = "bus.acl.AclPlugin"
"""Dotted path amqtt loads the ACL plugin from."""


class Access(StrEnum):
    """What a rule grants on its filter."""

    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"

    @property
    def reads(self) -> bool:
        """The rule lets its user subscribe and receive."""
        return self is not Access.WRITE

    @property
    def writes(self) -> bool:
        """The rule lets its user publish."""
        return self is not Access.READ


def check_filter(topic_filter: str) -> str:
    """Validate an MQTT topic filter as an ACL line can carry it.

    Raises:
        ValueError: empty, whitespace or control characters (an ``acl_file`` line would
            change meaning), or a misplaced ``+``/``#`` (MQTT 3.1.1 section 4.7.1).
    """
    if not topic_filter or any(ch.isspace() or ord(ch) < 0x20 for ch in topic_filter):
        raise ValueError(f"ACL filter {topic_filter!r} is empty or has whitespace/control chars")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"ACL filter {topic_filter!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"ACL filter {topic_filter!r}: '+' must be a whole level")
    return topic_filter


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True when `topic` (no wildcards) matches `topic_filter` (MQTT 3.1.1 section 4.7)."""
    want, have = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(want):
        if level == "#":
            return True
        if index >= len(have):
            return False
        if level not in ("+", have[index]):
            return False
    return len(want) == len(have)


def filter_covers(outer: str, inner: str) -> bool:
    """True when every topic `inner` can match is also matched by `outer`.

    amqtt's own TopicAccessControlListPlugin gets this wrong for ``#`` (it lets a client granted
    ``a/+`` subscribe to ``a/#``), which is why we ship our own plugin.
    """
    out, inn = outer.split("/"), inner.split("/")
    for index, level in enumerate(out):
        if level == "#":
            return True
        if index >= len(inn) or inn[index] == "#":
            return False
        if level == "+":
            continue
        if inn[index] != level:  # also refuses inner '+' against a literal level
            return False
    # "a/#" also matches "a" itself, so an outer one level longer ending in '#' covers it.
    return len(out) == len(inn)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AclRule(_Frozen):
    """One grant: `access` on every topic `topic` matches."""

    access: Access
    topic: str

    @field_validator("topic")
    @classmethod
    def _valid(cls, value: str) -> str:
        return check_filter(value)


class AclPolicy(_Frozen):
    """Who may read and write what: username -> rules. Unlisted users get nothing."""

    clients: dict[str, tuple[AclRule, ...]] = {}

    @field_validator("clients")
    @classmethod
    def _usernames(cls, value: dict[str, tuple[AclRule, ...]]) -> dict[str, tuple[AclRule, ...]]:
        for name in value:
            if not name or any(ch.isspace() or ord(ch) < 0x20 for ch in name):
                raise ValueError(f"username {name!r} is empty or has whitespace/control chars")
        return value

    def merged(self, other: AclPolicy) -> AclPolicy:
        """This policy plus `other` (rules of the same user are concatenated)."""
        clients = dict(self.clients)
        for name, rules in other.clients.items():
            clients[name] = clients.get(name, ()) + rules
        return AclPolicy(clients=clients)

    def _filters(self, username: str | None, *, write: bool) -> list[str]:
        if username is None:
            return []
        rules = self.clients.get(username, ())
        return [r.topic for r in rules if (r.access.writes if write else r.access.reads)]

    def may_publish(self, username: str | None, topic: str) -> bool:
        """Whether `username` may publish on `topic`."""
        return any(topic_matches(f, topic) for f in self._filters(username, write=True))

    def may_receive(self, username: str | None, topic: str) -> bool:
        """Whether a message on `topic` may be delivered to `username`."""
        return any(topic_matches(f, topic) for f in self._filters(username, write=False))

    def may_subscribe(self, username: str | None, topic_filter: str) -> bool:
        """Whether every topic `topic_filter` matches is readable by `username`."""
        return any(filter_covers(f, topic_filter) for f in self._filters(username, write=False))


def policy(clients: Mapping[str, Iterable[AclRule]]) -> AclPolicy:
    """Build a policy from username -> rules (the role builders below produce the rules)."""
    return AclPolicy(clients={name: tuple(rules) for name, rules in clients.items()})


# ---- rendering -----------------------------------------------------------------------------


def render_mosquitto_acl(acl: AclPolicy) -> str:
    """The policy as a Mosquitto ``acl_file`` (mosquitto.conf(5), "acl_file").

    No line precedes the first ``user`` line, so anonymous clients get no access at all.
    """
    lines = ["# generated by edgefabric (bus.acl); edit the policy, not this file"]
    for username, rules in sorted(acl.clients.items()):
        lines += ["", f"user {username}"]
        lines += [f"topic {rule.access.value} {rule.topic}" for rule in rules]
    return "\n".join(lines) + "\n"


def amqtt_plugin_config(acl: AclPolicy) -> dict[str, Any]:
    """The policy as the ``plugins`` entry amqtt needs to load `AclPlugin`."""
    read: dict[str, list[str]] = {}
    write: dict[str, list[str]] = {}
    for username, rules in acl.clients.items():
        read[username] = [r.topic for r in rules if r.access.reads]
        write[username] = [r.topic for r in rules if r.access.writes]
    return {AMQTT_PLUGIN: {"read": read, "write": write}}


class AclPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt topic-check plugin enforcing an `AclPolicy` on publish, subscribe and delivery."""

    @dataclass
    class Config:
        """What `amqtt_plugin_config` renders: username -> filters, per direction."""

        read: dict[str, list[str]] = field(default_factory=dict)
        write: dict[str, list[str]] = field(default_factory=dict)

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        config: AclPlugin.Config = context.config
        names = set(config.read) | set(config.write)
        rules = {
            name: tuple(AclRule(access=Access.READ, topic=t) for t in config.read.get(name, []))
            + tuple(AclRule(access=Access.WRITE, topic=t) for t in config.write.get(name, []))
            for name in names
        }
        self._policy = AclPolicy(clients=rules)

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        """Allow or refuse one publish, subscribe or delivery (deny when unsure)."""
        username = session.username if session is not None else None
        if topic is None or username is None:
            return False
        if action == Action.PUBLISH:
            return self._policy.may_publish(username, topic)
        if action == Action.SUBSCRIBE:
            return self._policy.may_subscribe(username, topic)
        if action == Action.RECEIVE:
            return self._policy.may_receive(username, topic)
        return False


# ---- role builders -------------------------------------------------------------------------


def _read(*filters: str) -> list[AclRule]:
    return [AclRule(access=Access.READ, topic=f) for f in filters]


def _write(*filters: str) -> list[AclRule]:
    return [AclRule(access=Access.WRITE, topic=f) for f in filters]


def service_rules(service: str) -> list[AclRule]:
    """What every service needs: its own status and dead letters."""
    return _write(topics.service_status(service), topics.dead_letter(service))


def mapper_rules(devices: Iterable[str], *, service: str = "mappers") -> list[AclRule]:
    """A mapper publishes only its own devices' readings and status, and takes their writes."""
    rules = [
        *service_rules(service),
        *_write(topics.twin_reply("twin-writes")),  # where the twin asks for write results
    ]
    for device in devices:
        rules += _write(
            topics.readings_filter(device),
            topics.device_status(device),
            topics.device_write_result(device),
        )
        rules += _read(topics.device_write(device))
    return rules


def twin_rules(*, service: str = "twin") -> list[AclRule]:
    """The twin reads readings, status, desired sets, gets and write results; owns ef/twin/#."""
    return [
        *service_rules(service),
        *_read(
            topics.readings_filter(),
            topics.device_status_filter(),
            topics.twin_desired_set_filter(),
            topics.twin_get_filter(),
            f"{topics.ROOT}/devices/+/write/result",
            topics.twin_reply("twin-writes"),  # where mappers answer the twin's device writes
        ),
        AclRule(access=Access.WRITE, topic=f"{topics.ROOT}/twin/#"),
        *_write(f"{topics.ROOT}/devices/+/write"),
    ]


def app_rules(client: str, *, twin_write: bool = False) -> list[AclRule]:
    """An app reads data and twins and asks for twin documents; writes desired only if granted.

    Args:
        client: the app's client name, which names its private reply topics.
        twin_write: grant ``ef/twin/+/desired/set`` (apps are read-only by default).
    """
    rules = _read(
        topics.readings_filter(),
        topics.device_status_filter(),
        topics.results_filter(),
        f"{topics.ROOT}/twin/+/document",
        f"{topics.ROOT}/twin/+/delta",
        f"{topics.ROOT}/twin/+/errors",
        topics.twin_reply(client),
        topics.infer_reply(client),
    )
    rules += _write(topics.twin_get_filter(), topics.infer_request_filter())
    if twin_write:
        rules += _write(topics.twin_desired_set_filter())
    return rules


def pipeline_rules(*, service: str = "pipelines") -> list[AclRule]:
    """A pipeline reads readings, inference requests and model updates; publishes results."""
    return [
        *service_rules(service),
        *_read(
            topics.readings_filter(),
            topics.infer_request_filter(),
            topics.model_update_filter(),
            f"{topics.ROOT}/models/+/command",  # rollback commands for the model updater
        ),
        *_write(
            topics.results_filter(),
            topics.hard_examples_filter(),
            f"{topics.ROOT}/models/+/status",
            f"{topics.ROOT}/infer/replies/+",
            f"{topics.ROOT}/fl/+/update",
        ),
    ]


def bridge_rules(*, service: str = "bridge") -> list[AclRule]:
    """The bridge reads what leaves the site and writes only what the cloud sends down."""
    return [
        *service_rules(service),
        *_read(
            topics.results_filter(),
            topics.hard_examples_filter(),
            topics.device_status_filter(),
            f"{topics.ROOT}/twin/+/document",
            f"{topics.ROOT}/twin/+/errors",
            topics.fl_update_filter(),
        ),
        *_write(
            topics.bridge_status(),
            topics.model_update_filter(),
            topics.twin_desired_set_filter(),
            f"{topics.ROOT}/fl/+/global",
        ),
    ]


def offload_rules(*, service: str = "offload") -> list[AclRule]:
    """Offload reads inference requests and answers only on the reply topics."""
    return [
        *service_rules(service),
        *_read(topics.infer_request_filter()),
        *_write(f"{topics.ROOT}/infer/replies/+"),
    ]


def model_updater_rules(*, service: str = "models") -> list[AclRule]:
    """The model updater reads updates and rollback commands and reports each model's status."""
    return [
        *service_rules(service),
        *_read(topics.model_update_filter(), topics.model_command_filter()),
        *_write(topics.model_status_filter(), f"{topics.ROOT}/infer/replies/+"),  # command answers
    ]


def trainer_rules(*, service: str = "fl-trainer") -> list[AclRule]:
    """A federated edge trainer reads global models and sends its updates.

    Only the bridge (`bridge_rules`) may write ``ef/fl/{job}/global``: an edge trainer without
    trusted keys trains on whatever is there.
    """
    return [
        *service_rules(service),
        *_read(f"{topics.ROOT}/fl/+/global"),
        *_write(topics.fl_update_filter()),
    ]


EDGE_SERVICES = ("mappers", "twin", "pipelines", "models", "offload", "bridge", "fl-trainer")
"""The MQTT clients an edge connects, by service name (`edgefabric.edge.Edge`)."""


def edge_policy(devices: Iterable[str], *, usernames: Mapping[str, str] | None = None) -> AclPolicy:
    """The least-privilege ACL of every service one edge runs, in one call.

    Args:
        devices: the devices the edge's mappers serve.
        usernames: service -> its broker username where they differ (default: the service
            name, as `MqttSecuritySettings.clients` usually names them).

    Apps get their own entries (`app_rules`), merged with `AclPolicy.merged`.
    """
    names = {service: service for service in EDGE_SERVICES} | dict(usernames or {})
    roles = {
        "mappers": mapper_rules(devices),
        "twin": twin_rules(),
        "pipelines": pipeline_rules(),
        "models": model_updater_rules(),
        "offload": offload_rules(),
        "bridge": bridge_rules(),
        "fl-trainer": trainer_rules(),
    }
    clients: dict[str, list[AclRule]] = {}
    for service, rules in roles.items():  # services sharing a login get the union
        clients.setdefault(names[service], []).extend(rules)
    return policy(clients)
