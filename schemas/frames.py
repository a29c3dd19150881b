"""Binary frames: a JSON header (a `schemas` message) followed by a binary body.

Layout: ``b"EFF1"``, uint32 big-endian header length, the header's JSON, then the body bytes.
Used where a message carries bulk data (offloaded images, hard examples, model files): the
metadata stays a typed, versioned message and the data stays bytes.
"""

from __future__ import annotations

import struct
from typing import TypeVar

from pydantic import BaseModel

from schemas.codec import decode, encode
from schemas.errors import SchemaError

MAGIC = b"EFF1"
MAX_HEADER = 64 * 1024

H = TypeVar("H", bound=BaseModel)


def pack(header: BaseModel, body: bytes) -> bytes:
    """One frame of `header` and `body`."""
    raw = encode(header)
    return MAGIC + struct.pack(">I", len(raw)) + raw + body


def unpack(model: type[H], data: bytes) -> tuple[H, bytes]:
    """Split a frame into its typed header and its body.

    Raises:
        SchemaError: bad magic, a header longer than the frame or than 64 KiB, or an invalid
            header (the reason names the field).
    """
    if len(data) < 8 or data[:4] != MAGIC:
        raise SchemaError("not an edgefabric frame (bad magic)")
    (length,) = struct.unpack_from(">I", data, 4)
    if length > MAX_HEADER or 8 + length > len(data):
        raise SchemaError(f"frame header of {length} bytes does not fit the frame")
    header = decode(model, data[8 : 8 + length], max_size=MAX_HEADER)
    return header, data[8 + length :]
