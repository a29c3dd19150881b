"""The binary tensor and frame formats: exact layout, strict refusals with reasons."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from schemas.codec import encode
from schemas.errors import SchemaError
from schemas.frames import pack, unpack
from schemas.models import ModelUpdate
from schemas.tensor import DTYPES, MAGIC, decode_tensor, encode_tensor


@pytest.mark.parametrize("dtype", [d.str for d in DTYPES.values()])
def test_every_allowed_dtype_round_trips(dtype: str):
    array = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    back = decode_tensor(encode_tensor(array))
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    assert np.array_equal(back, array)


def test_the_layout_is_magic_code_ndim_shape_then_little_endian_elements():
    data = encode_tensor(np.array([[1.0, 2.0]], dtype=">f4"))  # big-endian in, LE out
    assert data[:4] == MAGIC
    assert struct.unpack_from("<BB2I", data, 4) == (1, 2, 1, 2)
    assert data[14:] == struct.pack("<2f", 1.0, 2.0)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"EFT2" + bytes(10), "bad magic"),
        (b"EF", "bad magic"),
        (MAGIC + struct.pack("<BB", 99, 1) + struct.pack("<I", 1) + bytes(4), "dtype code 99"),
        (MAGIC + struct.pack("<BB", 1, 9) + bytes(36), "9 dimensions"),
        (MAGIC + struct.pack("<BB", 1, 2) + bytes(4), "shorter than its shape"),
        (MAGIC + struct.pack("<BBII", 1, 2, 2, 2) + bytes(15), "needs 16"),
        (MAGIC + struct.pack("<BBII", 1, 2, 2, 2) + bytes(17), "needs 16"),
    ],
)
def test_malformed_tensors_are_refused_with_the_reason(data: bytes, reason: str):
    with pytest.raises(SchemaError, match=reason):
        decode_tensor(data)


def test_a_huge_declared_shape_is_refused_before_anything_is_allocated():
    header = MAGIC + struct.pack("<BB3I", 2, 3, 65535, 65535, 65535)
    with pytest.raises(SchemaError, match="exceeds"):
        decode_tensor(header + bytes(8))
    with pytest.raises(SchemaError, match="exceeds the 64-byte limit"):
        decode_tensor(encode_tensor(np.zeros(32, dtype=np.float32)), max_bytes=64)


def test_unsupported_dtypes_are_refused_on_encode():
    with pytest.raises(SchemaError, match="complex"):
        encode_tensor(np.zeros(2, dtype=np.complex64))


def test_a_frame_keeps_its_typed_header_and_raw_body():
    body = bytes(range(256)) * 4
    header = ModelUpdate(name="m", version="2", sha256="a" * 64, size=len(body))
    got, raw = unpack(ModelUpdate, pack(header, body))
    assert got == header and raw == body
    with pytest.raises(SchemaError, match="does not fit"):
        unpack(ModelUpdate, b"EFF1" + struct.pack(">I", 10_000) + b"{}")
    raw_header = encode(header).replace(b'"version":"2"', b'"version":""')
    with pytest.raises(SchemaError, match="version"):
        unpack(ModelUpdate, b"EFF1" + struct.pack(">I", len(raw_header)) + raw_header + body)
