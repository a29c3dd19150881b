"""Tensors as bytes: a small fixed header, then the raw little-endian array.

Layout (all little-endian)::

    offset  size  field
    0       4     magic  b"EFT1"
    4       1     dtype code (see DTYPES)
    5       1     ndim (0..8)
    6       4*n   shape, one uint32 per dimension
    6+4n    ...   the elements, C order, exactly prod(shape) * itemsize bytes

No JSON number lists (Sedna's choice, ~10x larger and slow to parse); a phone can build this
with a few lines in any language. Decoding checks every field before allocating anything.
"""

from __future__ import annotations

import math
import struct

import numpy as np
from numpy.typing import NDArray

from schemas.errors import SchemaError

MAGIC = b"EFT1"
MAX_DIMS = 8
MAX_TENSOR_BYTES = 64 * 1024 * 1024

DTYPES: dict[int, np.dtype[np.generic]] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("u1"),
    4: np.dtype("i1"),
    5: np.dtype("<i4"),
    6: np.dtype("<i8"),
    7: np.dtype("<f2"),
}
_CODES = {dtype: code for code, dtype in DTYPES.items()}


def encode_tensor(array: NDArray[np.generic]) -> bytes:
    """Serialise an array (converted to little-endian, C order).

    Raises:
        SchemaError: unsupported dtype, too many dimensions, or too large.
    """
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    code = _CODES.get(np.dtype(dtype))
    if code is None:
        raise SchemaError(f"tensor dtype {array.dtype} is not supported")
    if array.ndim > MAX_DIMS:
        raise SchemaError(f"tensor has {array.ndim} dimensions, at most {MAX_DIMS} allowed")
    body = np.ascontiguousarray(array, dtype=dtype).tobytes()
    if len(body) > MAX_TENSOR_BYTES:
        raise SchemaError(f"tensor of {len(body)} bytes exceeds {MAX_TENSOR_BYTES}")
    header = MAGIC + struct.pack("<BB", code, array.ndim)
    header += struct.pack(f"<{array.ndim}I", *array.shape)
    return header + body


def decode_tensor(data: bytes, *, max_bytes: int = MAX_TENSOR_BYTES) -> NDArray[np.generic]:
    """Read a tensor frame; the returned array is read-only and shares `data`'s memory.

    Raises:
        SchemaError: bad magic, unknown dtype, too many dimensions, or a body whose size
            does not match the shape (checked before any allocation).
    """
    if len(data) < 6 or data[:4] != MAGIC:
        raise SchemaError("not a tensor frame (bad magic)")
    code, ndim = struct.unpack_from("<BB", data, 4)
    dtype = DTYPES.get(code)
    if dtype is None:
        raise SchemaError(f"unknown tensor dtype code {code}")
    if ndim > MAX_DIMS:
        raise SchemaError(f"tensor has {ndim} dimensions, at most {MAX_DIMS} allowed")
    start = 6 + 4 * ndim
    if len(data) < start:
        raise SchemaError("tensor frame shorter than its shape")
    shape = struct.unpack_from(f"<{ndim}I", data, 6)
    # Python integers: a 64-bit product wraps (2**16 four times is 0) and would pass the check.
    expected = math.prod(shape) * dtype.itemsize
    if expected > max_bytes:
        raise SchemaError(f"tensor of {expected} bytes exceeds the {max_bytes}-byte limit")
    if len(data) - start != expected:
        raise SchemaError(
            f"tensor body is {len(data) - start} bytes, shape {shape} of {dtype} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype, offset=start).reshape(shape)
