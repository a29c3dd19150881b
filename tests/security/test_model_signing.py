"""Model integrity: only models signed by a trusted cloud key, byte for byte, may load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefabric.cli import main
from schemas.signing import (
    BadModelSignature,
    ModelDigestMismatch,
    TrustedKeys,
    UnsignedModel,
    UntrustedSigningKey,
    generate_signing_key,
    sha256_hex,
    sign_model_update,
    verify_model_update,
)

MODEL = b"\x08\x07onnx-model-bytes" * 64
CLOUD = generate_signing_key()
TRUSTED = TrustedKeys.of([CLOUD.public_key()])


def _signed(name: str = "anomaly", version: str = "3", data: bytes = MODEL) -> str:
    return sign_model_update(name=name, version=version, sha256=sha256_hex(data), private_key=CLOUD)


SIGNED = _signed()


def _verify(
    *,
    name: str = "anomaly",
    version: str = "3",
    sha256: str | None = None,
    signature: str | None = SIGNED,
    trusted: TrustedKeys = TRUSTED,
    model_bytes: bytes = MODEL,
) -> None:
    """`verify_model_update` of the module's model, signed by the cloud, unless overridden."""
    verify_model_update(
        name=name,
        version=version,
        sha256=sha256 or sha256_hex(MODEL),
        signature=signature,
        trusted=trusted,
        model_bytes=model_bytes,
    )


def test_model_signed_by_the_cloud_verifies() -> None:
    _verify()


@pytest.mark.parametrize("signature", [None, ""])
def test_unsigned_model_is_refused(signature: str | None) -> None:
    with pytest.raises(UnsignedModel, match="unsigned"):
        _verify(signature=signature)


def test_tampered_model_bytes_are_refused() -> None:
    tampered = MODEL[:-1] + b"\x00"
    with pytest.raises(ModelDigestMismatch) as caught:
        _verify(model_bytes=tampered)
    assert caught.value.name == "anomaly"
    assert "hash to" in caught.value.reason


@pytest.mark.parametrize(
    ("name", "version"), [("other-model", "3"), ("anomaly", "2"), ("anomaly", "3 ")]
)
def test_signature_cannot_be_replayed_for_another_name_or_version(name: str, version: str) -> None:
    with pytest.raises(BadModelSignature):
        _verify(name=name, version=version)


def test_swapping_model_and_digest_together_is_refused() -> None:
    """An attacker who replaces the bytes and recomputes the digest still lacks the key."""
    evil = b"evil" * 100
    with pytest.raises(BadModelSignature):
        _verify(sha256=sha256_hex(evil), model_bytes=evil)


def test_model_signed_by_an_untrusted_key_is_refused() -> None:
    rogue = generate_signing_key()
    signature = sign_model_update(
        name="anomaly", version="3", sha256=sha256_hex(MODEL), private_key=rogue
    )
    with pytest.raises(UntrustedSigningKey):
        _verify(signature=signature)


def test_rotated_keys_are_both_trusted_during_rotation() -> None:
    new = generate_signing_key()
    both = TrustedKeys.of([CLOUD.public_key(), new.public_key()])
    for key in (CLOUD, new):
        signature = sign_model_update(
            name="anomaly", version="4", sha256=sha256_hex(MODEL), private_key=key
        )
        _verify(version="4", signature=signature, trusted=both)


@settings(max_examples=30, deadline=None)
@given(signature=st.text(max_size=200))
def test_garbage_signatures_are_refused_with_a_typed_error(signature: str) -> None:
    with pytest.raises((UnsignedModel, UntrustedSigningKey, BadModelSignature)):
        _verify(signature=signature)


@settings(max_examples=30, deadline=None)
@given(position=st.integers(min_value=0, max_value=len(MODEL) - 1), bit=st.integers(0, 7))
def test_any_single_bit_flip_in_the_model_is_detected(position: int, bit: int) -> None:
    flipped = bytearray(MODEL)
    flipped[position] ^= 1 << bit
    with pytest.raises(ModelDigestMismatch):
        _verify(model_bytes=bytes(flipped))


def test_cli_generates_signs_and_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "anomaly.onnx"
    model.write_bytes(MODEL)
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 0
    key, pub = tmp_path / "keys" / "model-signing.key", tmp_path / "keys" / "model-signing.pub"
    assert os.stat(key).st_mode & 0o077 == 0  # private key readable by its owner only
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 1  # never overwrites
    record = tmp_path / "anomaly.sig.json"
    assert (
        main(["keys", "sign", str(model), "--key", str(key), "--version", "7", "-o", str(record)])
        == 0
    )
    assert json.loads(record.read_text())["sha256"] == sha256_hex(MODEL)
    capsys.readouterr()
    assert (
        main(["keys", "verify", str(model), "--signature", str(record), "--trust", str(pub)]) == 0
    )
    assert "OK: anomaly 7" in capsys.readouterr().out
    model.write_bytes(MODEL + b"!")
    assert (
        main(["keys", "verify", str(model), "--signature", str(record), "--trust", str(pub)]) == 1
    )
    assert "ModelDigestMismatch" in capsys.readouterr().err
