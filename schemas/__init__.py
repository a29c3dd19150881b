"""The messages every part of edgefabric agrees on, and the topics they travel on."""

from schemas import topics
from schemas.base import JsonValue, Message, Name, check_name, new_message_id, now
from schemas.codec import decode, encode
from schemas.errors import EdgefabricError, InvalidName, SchemaError
from schemas.inference import InferenceResult
from schemas.readings import (
    DeviceState,
    DeviceStatus,
    DeviceWrite,
    DeviceWriteResult,
    Quality,
    Reading,
)
from schemas.status import DeadLetter, ServiceStatus

__all__ = [
    "DeadLetter",
    "DeviceState",
    "DeviceStatus",
    "DeviceWrite",
    "DeviceWriteResult",
    "EdgefabricError",
    "InferenceResult",
    "InvalidName",
    "JsonValue",
    "Message",
    "Name",
    "Quality",
    "Reading",
    "SchemaError",
    "ServiceStatus",
    "check_name",
    "decode",
    "encode",
    "new_message_id",
    "now",
    "topics",
]
