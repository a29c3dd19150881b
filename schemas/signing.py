"""Ed25519 signatures over model updates: signed in the cloud, verified at the edge before load.

What is signed is the triple (model name, version, SHA-256 of the model bytes), encoded
canonically with a domain-separation prefix, so a signature for model ``a`` v3 can be neither
replayed as ``b`` nor as ``a`` v2 (a rollback), and a model file changed by one byte no longer
matches its digest. The signature travels as one string, ``ed25519:<key id>:<base64>``, so a
message schema needs one optional field for it; the key id lets an edge trust several keys
while the cloud rotates them.

The edge calls `verify_model_update` with the received bytes BEFORE handing them to
onnxruntime; any `ModelIntegrityError` means: do not load, keep the current model, dead-letter
the update with ``str(error)`` as the reason.

Other signed records (federated global models, `schemas.federated`) use the same keys through
`sign_record` / `verify_record` under their own domain tag: the signed bytes begin with the
tag and a NUL, so a signature made for one domain never verifies in another, even by the same
key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.errors import EdgefabricError

MODEL_UPDATE_DOMAIN = "edgefabric/model-update/v1"
"""Domain tag of model-update signatures (the wire format since v1: do not change)."""
_SCHEME = "ed25519"


class Refusal(StrEnum):
    """Why a signed record was refused, in one word a caller can map to its own error.

    `verify_record` raises the first three; DIGEST_MISMATCH is for callers that compare the
    signed digest with the bytes they received.
    """

    UNSIGNED = "unsigned"
    UNTRUSTED_KEY = "untrusted key"
    BAD_SIGNATURE = "bad signature"
    DIGEST_MISMATCH = "digest mismatch"


class SignatureRefused(EdgefabricError):
    """A record of any domain whose signature must not be accepted.

    Attributes:
        refusal: which check failed.
        reason: in words, fit for a dead letter.
    """

    def __init__(self, refusal: Refusal, reason: str) -> None:
        super().__init__(reason)
        self.refusal = refusal
        self.reason = reason


class ModelIntegrityError(EdgefabricError):
    """A model update that must not be loaded. `reason` is fit for a dead letter."""

    def __init__(self, name: str, version: str, reason: str) -> None:
        super().__init__(f"model {name!r} version {version!r}: {reason}")
        self.name = name
        self.version = version
        self.reason = reason


class UnsignedModel(ModelIntegrityError):
    """The update carries no signature and the edge requires one."""


class UntrustedSigningKey(ModelIntegrityError):
    """Signed, but by a key this edge does not trust."""


class BadModelSignature(ModelIntegrityError):
    """The signature does not match (name, version, sha256): forged or altered metadata."""


class ModelDigestMismatch(ModelIntegrityError):
    """The model bytes do not hash to the signed SHA-256: the file was changed or truncated."""


class SigningKeyError(EdgefabricError):
    """A key file that cannot be read as an Ed25519 key."""


def sha256_hex(data: bytes) -> str:
    """SHA-256 of the model bytes, lower-case hex (what is signed)."""
    return hashlib.sha256(data).hexdigest()


def signed_record(domain: str, fields: object) -> bytes:
    """The exact bytes a signature of `domain` covers: the tag, NUL, then canonical JSON.

    Canonical: no whitespace, ASCII only, object keys sorted; so the signer and a verifier
    that rebuilt `fields` from a parsed message produce the same bytes.

    Raises:
        ValueError: `domain` is empty or holds a NUL (it could then collide with another).
    """
    if not domain or "\x00" in domain:
        raise ValueError(f"bad signing domain {domain!r}")
    text = json.dumps(fields, separators=(",", ":"), ensure_ascii=True, sort_keys=True)
    return domain.encode() + b"\x00" + text.encode()


def signed_bytes(name: str, version: str, sha256: str) -> bytes:
    """The exact bytes a model-update signature covers: the tag, then a canonical JSON triple."""
    return signed_record(MODEL_UPDATE_DOMAIN, [name, version, sha256.lower()])


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short stable id of a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys an edge accepts model signatures from, by key id."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def of(cls, public_keys: Iterable[Ed25519PublicKey]) -> TrustedKeys:
        """Trust each of `public_keys`."""
        return cls({key_id(k): k for k in public_keys})

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> TrustedKeys:
        """Trust the PEM public keys in `paths`."""
        return cls.of(load_public_key(p) for p in paths)


def sign_record(domain: str, fields: object, private_key: Ed25519PrivateKey) -> str:
    """Sign `fields` under `domain` (see `signed_record`).

    Returns:
        ``ed25519:<key id>:<base64 signature>``.
    """
    signature = private_key.sign(signed_record(domain, fields))
    kid = key_id(private_key.public_key())
    return f"{_SCHEME}:{kid}:{base64.b64encode(signature).decode()}"


def verify_record(
    domain: str, fields: object, signature: str | None, trusted: TrustedKeys, *, what: str
) -> None:
    """Refuse unless a trusted key signed exactly `fields` under `domain`.

    Args:
        domain: the record kind's tag (each kind has its own).
        fields: the record as the verifier received it, in the signer's shape.
        signature: the ``ed25519:<key id>:<base64>`` string, or None / "" when unsigned.
        trusted: public keys accepted.
        what: the record in words, for the reason (``"model update"``).

    Raises:
        SignatureRefused: `refusal` says which check failed.
    """
    if not signature:
        raise SignatureRefused(Refusal.UNSIGNED, f"unsigned {what} refused")
    scheme, _, rest = signature.partition(":")
    kid, _, encoded = rest.partition(":")
    public_key = trusted.keys.get(kid)
    if scheme != _SCHEME or public_key is None:
        raise SignatureRefused(Refusal.UNTRUSTED_KEY, f"signed by untrusted key {kid!r}")
    try:
        raw = base64.b64decode(encoded, validate=True)
        # Unused bits set in the last character: the same signature spelled another way.
        # Refused, so that changing any byte of a signature string is refused.
        canonical = base64.b64encode(raw).decode() == encoded
        public_key.verify(raw, signed_record(domain, fields))
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise SignatureRefused(Refusal.BAD_SIGNATURE, "signature does not match") from exc
    if not canonical:
        raise SignatureRefused(Refusal.BAD_SIGNATURE, "signature is not canonical base64")


def sign_model_update(
    *, name: str, version: str, sha256: str, private_key: Ed25519PrivateKey
) -> str:
    """Sign (name, version, sha256) in the cloud.

    Returns:
        ``ed25519:<key id>:<base64 signature>``, to put in the update's signature field.
    """
    return sign_record(MODEL_UPDATE_DOMAIN, [name, version, sha256.lower()], private_key)


_MODEL_ERRORS: dict[Refusal, type[ModelIntegrityError]] = {
    Refusal.UNSIGNED: UnsignedModel,
    Refusal.UNTRUSTED_KEY: UntrustedSigningKey,
    Refusal.BAD_SIGNATURE: BadModelSignature,
}


def verify_model_update(
    *,
    name: str,
    version: str,
    sha256: str,
    signature: str | None,
    trusted: TrustedKeys,
    model_bytes: bytes | None = None,
) -> None:
    """Refuse an update unless a trusted key signed it and, if given, the bytes match.

    Args:
        name: model name as carried by the update.
        version: model version as carried by the update (the same string the cloud signed).
        sha256: hex digest carried by the update.
        signature: the update's signature field (None or "" when unsigned).
        trusted: public keys this edge accepts.
        model_bytes: the received model; its digest must equal `sha256`. Pass it unless the
            caller has already compared `sha256_hex(model_bytes)` itself.

    Raises:
        UnsignedModel: no signature.
        UntrustedSigningKey: malformed signature string or unknown key id.
        BadModelSignature: the signature does not cover these name/version/sha256.
        ModelDigestMismatch: `model_bytes` do not hash to `sha256`.
    """
    fields = [name, version, sha256.lower()]
    try:
        verify_record(MODEL_UPDATE_DOMAIN, fields, signature, trusted, what="model update")
    except SignatureRefused as exc:
        raise _MODEL_ERRORS[exc.refusal](name, version, exc.reason) from exc
    if model_bytes is not None:
        actual = sha256_hex(model_bytes)
        if actual != sha256.lower():
            raise ModelDigestMismatch(
                name, version, f"model bytes hash to {actual}, signed digest is {sha256}"
            )


# ---- keys ------------------------------------------------------------------------------------


def generate_signing_key() -> Ed25519PrivateKey:
    """A new Ed25519 signing key (keep it in the cloud, never on an edge)."""
    return Ed25519PrivateKey.generate()


def write_key_pair(private_key: Ed25519PrivateKey, private_path: Path, public_path: Path) -> None:
    """Write the private key (PKCS#8 PEM, mode 0600) and its public key (PEM)."""
    private_path.touch(mode=0o600, exist_ok=False)
    private_path.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_path.write_bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key.

    Raises:
        SigningKeyError: unreadable, or not an unencrypted Ed25519 private key.
    """
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a PEM Ed25519 public key.

    Raises:
        SigningKeyError: unreadable, or not an Ed25519 public key.
    """
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SigningKeyError(f"{path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: not an Ed25519 public key")
    return key
