"""The messages every part of edgefabric agrees on, and the topics they travel on.

Binary bodies (tensors, model files) travel in frames (`schemas.frames`, `schemas.tensor`);
federated-learning frames and model signatures live in `schemas.federated` and
`schemas.signing` (imported on use: they pull in numpy and cryptography).
"""

from schemas import topics
from schemas.base import JsonValue, Message, Name, check_name, new_message_id, now
from schemas.bridge import BridgeStatus
from schemas.codec import decode, encode
from schemas.errors import EdgefabricError, InvalidName, SchemaError
from schemas.frames import pack, unpack
from schemas.hard_examples import HardExample
from schemas.inference import InferenceResult, JointAnswer, Prediction
from schemas.models import ModelCommand, ModelStatus, ModelUpdate
from schemas.offload import OffloadError, OffloadRequest, OffloadResponse
from schemas.readings import (
    DeviceState,
    DeviceStatus,
    DeviceWrite,
    DeviceWriteResult,
    Quality,
    Reading,
)
from schemas.status import DeadLetter, ServiceStatus
from schemas.twin import (
    TwinDelta,
    TwinDesiredSet,
    TwinDocument,
    TwinError,
    TwinGetRequest,
    TwinGetResponse,
    TwinSetResult,
)

__all__ = [
    "BridgeStatus",
    "DeadLetter",
    "DeviceState",
    "DeviceStatus",
    "DeviceWrite",
    "DeviceWriteResult",
    "EdgefabricError",
    "HardExample",
    "InferenceResult",
    "InvalidName",
    "JointAnswer",
    "JsonValue",
    "Message",
    "ModelCommand",
    "ModelStatus",
    "ModelUpdate",
    "Name",
    "OffloadError",
    "OffloadRequest",
    "OffloadResponse",
    "Prediction",
    "Quality",
    "Reading",
    "SchemaError",
    "ServiceStatus",
    "TwinDelta",
    "TwinDesiredSet",
    "TwinDocument",
    "TwinError",
    "TwinGetRequest",
    "TwinGetResponse",
    "TwinSetResult",
    "check_name",
    "decode",
    "encode",
    "new_message_id",
    "now",
    "pack",
    "topics",
    "unpack",
]
