"""Every MQTT topic and NATS subject edgefabric uses, built in one place.

No other module spells a topic. Each builder validates the names it is given (see
`schemas.base.check_name`), so a device called ``a/#`` or ``x.>`` can never turn a publish into
a wildcard or spill into another device's namespace. `docs/topics.md` documents the layout.

MQTT (local broker, one per edge) — root ``ef``::

    ef/readings/{device}/{property}          mapper -> anyone        Reading
    ef/devices/{device}/status               mapper -> anyone        DeviceStatus (retained)
    ef/devices/{device}/write                twin -> mapper          DeviceWrite
    ef/devices/{device}/write/result         mapper -> twin          DeviceWriteResult
    ef/twin/{device}/...                     twin API (see the twin_* builders)
    ef/results/{pipeline}/{device}           pipeline -> anyone      InferenceResult
    ef/infer/{model}/request                 app -> pipeline         offloaded inference
    ef/hard-examples/{pipeline}              pipeline -> bridge      hard examples
    ef/models/{model}/update                 bridge -> pipeline      model updates (retained)
    ef/models/{model}/status                 pipeline -> anyone      active model version
    ef/fl/{job}/...                          federated learning
    ef/services/{service}/status             any service             ServiceStatus (retained)
    ef/dead-letter/{service}                 any service             DeadLetter

NATS (leaf + hub) — root ``ef``::

    ef.up.{edge}.{class}.{...}               edge -> cloud (bridge forwards)
    ef.down.{edge}.{kind}.{...}              cloud -> one edge
    ef.down.all.{kind}.{...}                 cloud -> every edge
    ef.cloud.infer.{model}                   joint inference, served in a queue group
    efq.{edge}.{class}.{...}                 the edge's local durable queue (never leaves the leaf)
"""

from __future__ import annotations

from enum import StrEnum

from schemas.base import check_name

ROOT = "ef"
"""First level of every MQTT topic and first token of every NATS subject edgefabric owns."""


class TrafficClass(StrEnum):
    """Uplink traffic classes, highest priority first (the bridge drains them in this order)."""

    CONTROL = "control"
    TWIN = "twin"
    RESULTS = "results"
    HARD_EXAMPLES = "hard-examples"


def _mqtt(*levels: str) -> str:
    return "/".join((ROOT, *levels))


def _names(*names: str) -> tuple[str, ...]:
    return tuple(check_name(name) for name in names)


# ---- MQTT: devices -----------------------------------------------------------------------


def reading(device: str, prop: str) -> str:
    """Topic of one property's readings."""
    return _mqtt("readings", *_names(device, prop))


def readings_filter(device: str | None = None, prop: str | None = None) -> str:
    """Subscription filter for readings; `None` means any device or any property."""
    dev = "+" if device is None else check_name(device)
    if prop is None:
        return _mqtt("readings", dev, "+")
    return _mqtt("readings", dev, check_name(prop))


def device_status(device: str) -> str:
    """Retained topic of a device's online/degraded/offline state."""
    return _mqtt("devices", *_names(device), "status")


def device_status_filter() -> str:
    """Every device's status."""
    return _mqtt("devices", "+", "status")


def device_write(device: str) -> str:
    """Where the twin asks a mapper to write to a device."""
    return _mqtt("devices", *_names(device), "write")


def device_write_result(device: str) -> str:
    """Where a mapper answers a write (default reply topic of `DeviceWrite`)."""
    return _mqtt("devices", *_names(device), "write", "result")


# ---- MQTT: twin --------------------------------------------------------------------------


def twin_desired_set(device: str) -> str:
    """Apps and the cloud set desired values here."""
    return _mqtt("twin", *_names(device), "desired", "set")


def twin_desired_set_filter() -> str:
    """Every device's desired-set topic (the twin service subscribes to this)."""
    return _mqtt("twin", "+", "desired", "set")


def twin_delta(device: str) -> str:
    """Desired values that differ from reported, published on every change."""
    return _mqtt("twin", *_names(device), "delta")


def twin_document(device: str) -> str:
    """The full twin document (retained), published on every change."""
    return _mqtt("twin", *_names(device), "document")


def twin_get(device: str) -> str:
    """Request topic for a one-off read of the twin document."""
    return _mqtt("twin", *_names(device), "get")


def twin_get_filter() -> str:
    """Every device's get topic."""
    return _mqtt("twin", "+", "get")


def twin_errors(device: str) -> str:
    """Refused updates and failed device writes, with the reason."""
    return _mqtt("twin", *_names(device), "errors")


def twin_reply(client: str) -> str:
    """Default reply topic for a twin client that did not choose one."""
    return _mqtt("twin", "replies", *_names(client))


def twin_filter(device: str) -> str:
    """Everything the twin publishes about one device (for `edgefabric twin watch`)."""
    return _mqtt("twin", *_names(device), "#")


# ---- MQTT: inference ---------------------------------------------------------------------


def result(pipeline: str, device: str) -> str:
    """Inference results of one pipeline for one device."""
    return _mqtt("results", *_names(pipeline, device))


def results_filter(pipeline: str | None = None) -> str:
    """All results, or one pipeline's."""
    return _mqtt("results", "+" if pipeline is None else check_name(pipeline), "+")


def infer_request(model: str) -> str:
    """Offloaded inference requests for one model."""
    return _mqtt("infer", *_names(model), "request")


def infer_request_filter() -> str:
    """Offloaded inference requests for any model."""
    return _mqtt("infer", "+", "request")


def infer_reply(client: str) -> str:
    """Default reply topic for an offloading client on MQTT 3.1.1."""
    return _mqtt("infer", "replies", *_names(client))


def hard_examples(pipeline: str) -> str:
    """Hard examples a pipeline mined, for the bridge to carry up."""
    return _mqtt("hard-examples", *_names(pipeline))


def hard_examples_filter() -> str:
    """Every pipeline's hard examples."""
    return _mqtt("hard-examples", "+")


def model_update(model: str) -> str:
    """Model updates for one model (retained: a restarted pipeline gets the latest)."""
    return _mqtt("models", *_names(model), "update")


def model_update_filter() -> str:
    """Model updates for any model."""
    return _mqtt("models", "+", "update")


def model_command(model: str) -> str:
    """Operator commands for a model on this edge (rollback); never retained."""
    return _mqtt("models", *_names(model), "command")


def model_status(model: str) -> str:
    """The active version of a model on this edge (retained)."""
    return _mqtt("models", *_names(model), "status")


def fl_global(job: str) -> str:
    """A federated job's global model, delivered from the cloud (retained)."""
    return _mqtt("fl", *_names(job), "global")


def fl_update(job: str) -> str:
    """A local update from this edge's trainer for a federated job."""
    return _mqtt("fl", *_names(job), "update")


def fl_update_filter() -> str:
    """Local updates of any federated job."""
    return _mqtt("fl", "+", "update")


# ---- MQTT: operations --------------------------------------------------------------------


def service_status(service: str) -> str:
    """Retained status of one service."""
    return _mqtt("services", *_names(service), "status")


def service_status_filter() -> str:
    """Every service's status."""
    return _mqtt("services", "+", "status")


def dead_letter(service: str) -> str:
    """Where `service` puts payloads it refused, with the reason."""
    return _mqtt("dead-letter", *_names(service))


def dead_letter_filter() -> str:
    """Every service's dead letters."""
    return _mqtt("dead-letter", "+")


def bridge_status() -> str:
    """Retained link state, queue depth per class and lag of the cloud bridge."""
    return _mqtt("bridge", "status")


# ---- NATS ----------------------------------------------------------------------------------


def _subject(*tokens: str) -> str:
    return ".".join((ROOT, *tokens))


def uplink(edge: str, traffic_class: TrafficClass, *rest: str) -> str:
    """Cloud subject of a message that left `edge`, e.g. ``ef.up.site-1.results.anomaly.plc-1``."""
    return _subject("up", *_names(edge), traffic_class.value, *_names(*rest))


def uplink_filter(edge: str | None = None, traffic_class: TrafficClass | None = None) -> str:
    """Subscription subject over uplink traffic, by edge and class (`None` = any)."""
    edge_token = "*" if edge is None else check_name(edge)
    if traffic_class is None:
        return _subject("up", edge_token, ">")
    return _subject("up", edge_token, traffic_class.value, ">")


def downlink(edge: str | None, kind: str, *rest: str) -> str:
    """Subject of a message for one edge, or for every edge when `edge` is None."""
    target = "all" if edge is None else check_name(edge)
    return _subject("down", target, *_names(kind, *rest))


def downlink_filters(edge: str) -> tuple[str, str]:
    """The two subjects an edge listens on: its own and the broadcast."""
    return _subject("down", check_name(edge), ">"), _subject("down", "all", ">")


def cloud_infer(model: str) -> str:
    """Request-reply subject of the deep cloud model (served in a queue group)."""
    return _subject("cloud", "infer", *_names(model))


CLOUD_INFER_QUEUE = "ef-cloud-infer"
"""Queue group of the cloud inference replicas: more replicas scale out, one answers each."""


def edge_queue(edge: str, traffic_class: TrafficClass, *rest: str) -> str:
    """Subject in the edge's own JetStream queue (``efq.`` never matches a cloud subscription)."""
    return ".".join(("efq", *_names(edge), traffic_class.value, *_names(*rest)))


def edge_queue_filter(edge: str) -> str:
    """Every subject of the edge's own queue."""
    return ".".join(("efq", check_name(edge), ">"))


def uplink_from_queue(edge: str, queue_subject: str) -> str:
    """Map a local queue subject to its cloud subject (``efq.E.x.y`` -> ``ef.up.E.x.y``)."""
    prefix = f"efq.{check_name(edge)}."
    if not queue_subject.startswith(prefix):
        raise ValueError(f"{queue_subject!r} is not in edge {edge!r}'s queue")
    return _subject("up", edge, queue_subject[len(prefix) :])


def fl_update_uplink_filter(job: str) -> str:
    """Cloud subject filter over every edge's updates for one federated job (from `fl_update`)."""
    return _subject("up", "*", TrafficClass.CONTROL.value, "fl", check_name(job), "update")


def model_command_filter() -> str:
    """Operator commands for any model on this edge (see `model_command`)."""
    return _mqtt("models", "+", "command")


def model_status_filter() -> str:
    """Every model's status on this edge (see `model_status`)."""
    return _mqtt("models", "+", "status")


def learning_labelled() -> str:
    """Core NATS subject on the hub: "people labelled hard examples" (wakes the learner)."""
    return _subject("cloud", "learning", "labelled")


def cloud_dead_letter(service: str) -> str:
    """Core NATS subject on the hub where cloud `service` reports what it refused (`DeadLetter`).

    The cloud's counterpart of `dead_letter`: a message from an edge (possibly a compromised
    one) that a cloud service cannot accept is acknowledged and reported here with its reason.
    """
    return _subject("cloud", "dead-letter", *_names(service))


def cloud_dead_letter_filter() -> str:
    """Every cloud service's dead letters."""
    return _subject("cloud", "dead-letter", "*")


# ---- MQTT: where a service may answer ----------------------------------------------------

_MAX_TOPIC_BYTES = 65_535


def reply_topic_refusal(topic: str | None) -> str | None:
    """Why a requester's reply topic must not be answered on, or None when it may.

    Services answer with their own (often broad) credentials, so a reply topic is a place a
    requester makes them publish. Outside ``ef/`` an app may pick any concrete topic; inside,
    only a replies namespace (``ef/{area}/replies/...``) or a device's write results: otherwise
    a request could reflect the answer onto a control topic (a desired set, a device write, a
    model update) that the requester itself may not write. A wildcard, an empty or ``$`` topic
    would get the service's own connection dropped or refused.
    """
    if not topic:
        return "no reply topic"
    if topic.startswith("$") or any(ch in topic for ch in "+#\x00"):
        return f"reply topic {topic[:80]!r} is not a topic one may publish to"
    if len(topic.encode()) > _MAX_TOPIC_BYTES:
        return "reply topic longer than MQTT allows"
    levels = topic.split("/")
    replies = len(levels) >= 4 and levels[2] == "replies" and all(levels[3:])
    write_result = len(levels) == 5 and levels[1] == "devices" and levels[3:] == ["write", "result"]
    if levels[0] != ROOT or replies or write_result:
        return None
    return f"reply topic {topic[:80]!r} is an edgefabric topic, not a replies topic"
