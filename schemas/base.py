"""The base every edgefabric message shares: frozen, versioned, identified."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from schemas.errors import InvalidName

_FORBIDDEN_IN_NAMES = frozenset("/+#.*> \t\r\n")
MAX_NAME_LENGTH = 128


RESERVED_NAMES = frozenset({"replies"})
"""A device or model named so would make ``ef/{area}/replies/...`` (where services may answer)
also one of its control topics."""


def check_name(value: str) -> str:
    """Reject names that would break a topic or subject built from them.

    Names come from device files and from the network, and end up as one MQTT topic level and
    one NATS subject token, so anything that is a separator or a wildcard in either protocol is
    refused here, once, instead of being escaped differently in two places.
    """
    if not value:
        raise InvalidName(value, "is empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidName(value, f"is longer than {MAX_NAME_LENGTH} characters")
    if value.startswith("$"):
        raise InvalidName(value, "starts with '$', reserved for broker topics")
    if value in RESERVED_NAMES:
        raise InvalidName(value, "is reserved: it names the replies level of edgefabric topics")
    bad = sorted(
        {ch for ch in value if ch in _FORBIDDEN_IN_NAMES or ord(ch) < 32 or ord(ch) == 127}
    )
    if bad:
        raise InvalidName(value, f"contains {''.join(repr(ch) for ch in bad)}")
    return value


def _validated_name(value: str) -> str:
    try:
        return check_name(value)
    except InvalidName as exc:
        # pydantic turns ValueError into a field error that names the field.
        raise ValueError(str(exc)) from exc


Name = Annotated[str, AfterValidator(_validated_name)]
"""A device, property, pipeline, model or edge name: safe as a topic level and a subject token."""

JsonValue = Any
"""Any JSON value: twin values and readings may be objects, lists, strings with spaces or quotes."""


def new_message_id() -> str:
    """A globally unique id: the bridge uses it as `Nats-Msg-Id`, consumers to de-duplicate."""
    return uuid.uuid4().hex


def now() -> float:
    """Wall-clock time in Unix seconds, the one timestamp unit every message uses."""
    return time.time()


SCHEMA_VERSION = 1
"""The message schema this code speaks; a message of another version is refused, not guessed."""


class Message(BaseModel):
    """Every message on the bus: immutable once built, and carrying its own schema version.

    `schema_version` lets a consumer refuse a message from a newer producer with a clear error
    instead of misreading it; `message_id` is what makes forwarding idempotent end to end.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    message_id: str = Field(default_factory=new_message_id, min_length=1, max_length=64)

    @field_validator("schema_version")
    @classmethod
    def _spoken_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not spoken here ({SCHEMA_VERSION} is)")
        return value
