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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.errors import EdgefabricError

_CONTEXT = b"edgefabric/model-update/v1\x00"
_SCHEME = "ed25519"


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


def signed_bytes(name: str, version: str, sha256: str) -> bytes:
    """The exact bytes the signature covers: a prefix, then a canonical JSON triple."""
    triple = json.dumps([name, version, sha256.lower()], separators=(",", ":"), ensure_ascii=True)
    return _CONTEXT + triple.encode()


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


def sign_model_update(
    *, name: str, version: str, sha256: str, private_key: Ed25519PrivateKey
) -> str:
    """Sign (name, version, sha256) in the cloud.

    Returns:
        ``ed25519:<key id>:<base64 signature>``, to put in the update's signature field.
    """
    signature = private_key.sign(signed_bytes(name, version, sha256))
    kid = key_id(private_key.public_key())
    return f"{_SCHEME}:{kid}:{base64.b64encode(signature).decode()}"


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
    if not signature:
        raise UnsignedModel(name, version, "unsigned model update refused")
    scheme, _, rest = signature.partition(":")
    kid, _, encoded = rest.partition(":")
    public_key = trusted.keys.get(kid)
    if scheme != _SCHEME or public_key is None:
        raise UntrustedSigningKey(name, version, f"signed by untrusted key {kid!r}")
    try:
        raw = base64.b64decode(encoded, validate=True)
        public_key.verify(raw, signed_bytes(name, version, sha256))
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise BadModelSignature(name, version, "signature does not match") from exc
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
