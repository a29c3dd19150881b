"""Federated learning messages: the global model a round starts from, and an edge's update.

Both travel as frames (`schemas.frames`): a JSON header (`FitInstruction` or `FitUpdate`) and
a binary body holding the weights. The body is a weights pack::

    b"EFW1", uint32 LE layer count, then per layer: uint32 LE length + a tensor frame
    (`schemas.tensor`: dtype, shape, raw little-endian elements)

Never JSON number lists. Frames larger than the link's 1 MB payload are chunked by the bridge
(edge -> cloud) and by `CloudPublisher` (cloud -> edge), with a sha256 of the whole.

A global frame may be signed by the cloud (`encode_fit(..., signing_key=)`): the header then
carries the SHA-256 of the weights pack and an Ed25519 signature (`schemas.signing`, domain
``edgefabric/fl-global/v1``) over every other header field — job, round, model, train
settings, participants, deadline, final, ids, that digest. An edge that trusts keys decodes
with `decode_fit(..., trusted=)`, which checks the signature and the digest before it parses
the weights; a changed byte anywhere, a header moved to another job or round, an unsigned
frame or one signed by another key raise `GlobalModelRefused`. The domain differs from model
updates', so neither kind of signature verifies as the other.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from schemas.base import Message, Name, now
from schemas.errors import SchemaError
from schemas.frames import pack, unpack
from schemas.signing import (
    Refusal,
    SignatureRefused,
    TrustedKeys,
    sha256_hex,
    sign_record,
    verify_record,
)
from schemas.tensor import decode_tensor, encode_tensor

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

WEIGHTS_MAGIC = b"EFW1"
MAX_LAYERS = 64
FL_GLOBAL_DOMAIN = "edgefabric/fl-global/v1"
"""Domain tag of global-model signatures (distinct from `schemas.signing.MODEL_UPDATE_DOMAIN`)."""


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
    weights_sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    signature: str | None = Field(default=None, max_length=256)


class GlobalModelRefused(SignatureRefused):
    """A global frame whose signature or digest does not hold: do not train, dead-letter it.

    Attributes:
        job: the job the (untrusted) header names.
        round: the round the (untrusted) header names.
    """

    def __init__(self, job: str, round_: int, refusal: Refusal, reason: str) -> None:
        super().__init__(refusal, f"global model of job {job!r} round {round_}: {reason}")
        self.job = job
        self.round = round_


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


def _signed_fields(instruction: FitInstruction) -> object:
    """Every header field but the signature itself, as the signer and the verifier see it."""
    return instruction.model_dump(mode="json", exclude={"signature"})


def sign_fit(
    instruction: FitInstruction, body: bytes, signing_key: Ed25519PrivateKey
) -> FitInstruction:
    """The header to send with weights pack `body`: its digest filled in, then signed."""
    unsigned = instruction.model_copy(
        update={"weights_sha256": sha256_hex(body), "signature": None}
    )
    signature = sign_record(FL_GLOBAL_DOMAIN, _signed_fields(unsigned), signing_key)
    return unsigned.model_copy(update={"signature": signature})


def verify_fit(instruction: FitInstruction, body: bytes, trusted: TrustedKeys) -> None:
    """Refuse a global unless a trusted key signed its header and `body` has the signed digest.

    Raises:
        GlobalModelRefused: `refusal` is UNSIGNED, UNTRUSTED_KEY, BAD_SIGNATURE (a header
            field changed, or moved to another job or round) or DIGEST_MISMATCH (a weights
            byte changed).
    """
    job, round_ = instruction.job, instruction.round
    try:
        verify_record(
            FL_GLOBAL_DOMAIN,
            _signed_fields(instruction),
            instruction.signature,
            trusted,
            what="global model",
        )
    except SignatureRefused as exc:
        raise GlobalModelRefused(job, round_, exc.refusal, exc.reason) from exc
    actual = sha256_hex(body)
    if actual != instruction.weights_sha256:
        reason = f"weights hash to {actual}, signed digest is {instruction.weights_sha256}"
        raise GlobalModelRefused(job, round_, Refusal.DIGEST_MISMATCH, reason)


def encode_fit(
    instruction: FitInstruction, weights: Weights, *, signing_key: Ed25519PrivateKey | None = None
) -> bytes:
    """One global-model frame, signed when `signing_key` is given."""
    body = pack_weights(weights)
    if signing_key is not None:
        instruction = sign_fit(instruction, body, signing_key)
    return pack(instruction, body)


def decode_fit(
    data: bytes, *, trusted: TrustedKeys | None = None
) -> tuple[FitInstruction, Weights]:
    """Read a global-model frame; with `trusted`, verify it before the weights are parsed.

    Raises:
        SchemaError: the header or the weights are not valid.
        GlobalModelRefused: `trusted` is given and the frame is not signed by one of them,
            or was changed after signing.

    """
    header, body = unpack(FitInstruction, data)
    if trusted is not None:
        verify_fit(header, body, trusted)
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
