"""Bytes <-> messages. Only the bus and bridge boundaries call these; handlers take models."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from schemas.errors import SchemaError

M = TypeVar("M", bound=BaseModel)

MAX_JSON_PAYLOAD = 1_048_576
"""Refuse JSON bodies above 1 MiB before parsing: bigger data travels as binary or in chunks."""


def encode(message: BaseModel) -> bytes:
    """Serialise a message as compact UTF-8 JSON."""
    return message.model_dump_json().encode()


def decode(model: type[M], payload: bytes, *, max_size: int = MAX_JSON_PAYLOAD) -> M:
    """Parse `payload` as `model`.

    Raises:
        SchemaError: the payload is too large, not JSON, or not a valid `model`; the reason
            names the first offending field.

    """
    if len(payload) > max_size:
        raise SchemaError(f"payload of {len(payload)} bytes exceeds the {max_size}-byte limit")
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "<root>"
        raise SchemaError(f"invalid {model.__name__}: {where}: {first['msg']}") from exc
