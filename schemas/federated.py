"""Federated learning messages: the global model a round starts from, and an edge's update.

Both travel as frames (`schemas.frames`): a JSON header (`FitInstruction` or `FitUpdate`) and
a binary body holding the weights. The body is a weights pack::

    b"EFW1", uint32 LE layer count, then per layer: uint32 LE length + a tensor frame
    (`schemas.tensor`: dtype, shape, raw little-endian elements)

Never JSON number lists. Frames larger than the link's 1 MB payload are chunked by the bridge
(edge -> cloud) and by `CloudPublisher` (cloud -> edge), with a sha256 of the whole.
"""

from __future__ import annotations

import struct
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from schemas.base import Message, Name, now
from schemas.errors import SchemaError
from schemas.frames import pack, unpack
from schemas.tensor import decode_tensor, encode_tensor

WEIGHTS_MAGIC = b"EFW1"
MAX_LAYERS = 64


class TrainSettings(Message):
    """Local training knobs for one round (Flower's fit ``config``)."""

    kind: Literal["fl_train_settings"] = "fl_train_settings"
    epochs: int = Field(default=5, ge=1, le=1000)
    lr: float = Field(default=0.3, gt=0.0)
    batch: int = Field(default=16, ge=1)
    l2: float = Field(default=1e-4, ge=0.0)
    proximal_mu: float = Field(default=0.0, ge=0.0)


class FitInstruction(Message):
    """Header of a global-model frame: train from these weights for this round.

    `participants` names the edges sampled for the round (an edge not listed does not
    train); `final` marks the job's last global model, to keep and not to train on.
    """

    kind: Literal["fl_fit"] = "fl_fit"
    job: Name
    round: int = Field(ge=0)
    model: Name
    train: TrainSettings = TrainSettings()
    participants: list[Name] = Field(default_factory=list, max_length=10_000)
    deadline: float = 0.0
    final: bool = False
    timestamp: float = Field(default_factory=now)


class FitUpdate(Message):
    """Header of an update frame: an edge's weights after local training, and its sample count.

    `instruction` echoes the `message_id` of the `FitInstruction` it answers, so the cloud
    can refuse an update replayed from an earlier run of a job with the same name.
    """

    kind: Literal["fl_update"] = "fl_update"
    job: Name
    round: int = Field(ge=0)
    edge: Name
    instruction: str = Field(default="", max_length=64)
    num_examples: int = Field(ge=1)
    metrics: dict[str, float] = Field(default_factory=dict)
    timestamp: float = Field(default_factory=now)


Weights = list[NDArray[np.float32]]


def pack_weights(weights: Weights) -> bytes:
    """The binary weights pack of a list of arrays."""
    parts = [WEIGHTS_MAGIC, struct.pack("<I", len(weights))]
    for layer in weights:
        frame = encode_tensor(np.ascontiguousarray(layer, dtype=np.float32))
        parts += [struct.pack("<I", len(frame)), frame]
    return b"".join(parts)


def unpack_weights(data: bytes) -> Weights:
    """Read a weights pack (every length checked before it is used).

    Raises:
        SchemaError: bad magic, too many layers, truncated, trailing bytes, non-float32.

    """
    if len(data) < 8 or data[:4] != WEIGHTS_MAGIC:
        raise SchemaError("not a weights pack (bad magic)")
    (count,) = struct.unpack_from("<I", data, 4)
    if count > MAX_LAYERS:
        raise SchemaError(f"weights pack of {count} layers, at most {MAX_LAYERS}")
    offset, layers = 8, []
    for index in range(count):
        if offset + 4 > len(data):
            raise SchemaError(f"weights pack truncated at layer {index}")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise SchemaError(f"weights pack truncated in layer {index}")
        array = decode_tensor(data[offset : offset + length])
        if array.dtype != np.float32:
            raise SchemaError(f"layer {index} is {array.dtype}, float32 expected")
        if not np.all(np.isfinite(array)):
            raise SchemaError(f"layer {index} holds nan or inf")
        layers.append(np.asarray(array, dtype=np.float32))
        offset += length
    if offset != len(data):
        raise SchemaError(f"{len(data) - offset} bytes after the last layer")
    return layers


def encode_fit(instruction: FitInstruction, weights: Weights) -> bytes:
    """One global-model frame."""
    return pack(instruction, pack_weights(weights))


def decode_fit(data: bytes) -> tuple[FitInstruction, Weights]:
    """Read a global-model frame.

    Raises:
        SchemaError: the header or the weights are not valid.

    """
    header, body = unpack(FitInstruction, data)
    return header, unpack_weights(body)


def encode_update(update: FitUpdate, weights: Weights) -> bytes:
    """One update frame."""
    return pack(update, pack_weights(weights))


def decode_update(data: bytes) -> tuple[FitUpdate, Weights]:
    """Read an update frame.

    Raises:
        SchemaError: the header or the weights are not valid.

    """
    header, body = unpack(FitUpdate, data)
    return header, unpack_weights(body)
