"""Putting chunked payloads back together, with the sha256 they were sent with checked."""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from cloud_bridge import headers
from cloud_bridge.errors import IntegrityError, MalformedChunk

_NUMBER = re.compile(r"[0-9]{1,6}")  # str.isdigit() also takes '²', which int() refuses
MAX_CHUNKS = 1 << 16
"""Most chunks one payload may claim (32 GiB at the largest chunk size: far above any limit)."""


@dataclass
class _Partial:
    count: int
    digest: str
    parts: dict[int, bytes] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts.values())


class Reassembler:
    """Collects chunks (in any order, duplicates ignored) until a payload is whole.

    Memory is bounded by `max_bytes`: past it the oldest incomplete payload is given up (its
    sender retries from its durable queue, so nothing is lost for good).
    """

    def __init__(self, *, max_bytes: int = 256 << 20) -> None:
        self._partials: OrderedDict[str, _Partial] = OrderedDict()
        self._max_bytes = max_bytes
        self.abandoned = 0

    @staticmethod
    def is_chunk(hdrs: Mapping[str, str] | None) -> bool:
        """True when a message is one chunk of a larger payload."""
        return bool(hdrs) and headers.CHUNK in (hdrs or {})

    def add(self, hdrs: Mapping[str, str], data: bytes) -> tuple[str, bytes] | None:
        """Add one chunk; return (message id, whole payload) when it was the missing one.

        Raises:
            IntegrityError: the reassembled payload's sha256 differs from the sent one.
            MalformedChunk: the chunk headers are missing, not numbers, out of range, or
                disagree with the payload's other chunks; or the payload's chunks so far
                exceed `max_bytes` (it is forgotten).

        """
        whole_id, index, count, digest = _chunk_headers(hdrs)
        partial = self._partials.get(whole_id)
        if partial is None:
            partial = _Partial(count=count, digest=digest)
            self._partials[whole_id] = partial
        if (count, digest) != (partial.count, partial.digest):
            raise MalformedChunk(f"chunk {index}/{count} of {whole_id} disagrees with its siblings")
        partial.parts[index] = data
        if partial.size > self._max_bytes:  # alone: _trim keeps the newest partial
            del self._partials[whole_id]
            raise MalformedChunk(f"payload {whole_id} is larger than {self._max_bytes} bytes")
        self._trim()
        if len(partial.parts) < partial.count:
            return None
        del self._partials[whole_id]
        payload = b"".join(partial.parts[i] for i in range(partial.count))
        actual = hashlib.sha256(payload).hexdigest()
        if actual != partial.digest:
            raise IntegrityError(whole_id, partial.digest, actual)
        return whole_id, payload

    def discard(self, whole_id: str) -> None:
        """Forget a payload's chunks (its receiver gave up on it); nothing if unknown."""
        self._partials.pop(whole_id, None)

    def _trim(self) -> None:
        while len(self._partials) > 1 and sum(p.size for p in self._partials.values()) > (
            self._max_bytes
        ):
            self._partials.popitem(last=False)
            self.abandoned += 1


def _chunk_headers(hdrs: Mapping[str, str]) -> tuple[str, int, int, str]:
    """(whole id, index, count, sha256) of a chunk, checked: headers come from the network."""
    whole_id = hdrs.get(headers.CHUNK_OF, "")
    digest = hdrs.get(headers.SHA256, "")
    index_text, _, count_text = hdrs.get(headers.CHUNK, "").partition("/")
    if not whole_id or not digest:
        raise MalformedChunk(f"chunk without {headers.CHUNK_OF} or {headers.SHA256}")
    if not (_NUMBER.fullmatch(index_text) and _NUMBER.fullmatch(count_text)):
        raise MalformedChunk(f"{headers.CHUNK} {hdrs.get(headers.CHUNK)!r} is not index/count")
    index, count = int(index_text), int(count_text)
    if not 0 <= index < count <= MAX_CHUNKS:
        raise MalformedChunk(f"chunk {index}/{count} of {whole_id} is out of range")
    return whole_id, index, count, digest
