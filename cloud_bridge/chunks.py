"""Putting chunked payloads back together, with the sha256 they were sent with checked."""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cloud_bridge import headers
from cloud_bridge.errors import IntegrityError, MalformedChunk

_NUMBER = re.compile(r"[0-9]{1,6}")  # str.isdigit() also takes '²', which int() refuses
MAX_CHUNKS = 1 << 16
"""Most chunks one payload may claim (32 GiB at the largest chunk size: far above any limit)."""


@dataclass
class _Partial:
    owner: str
    count: int
    digest: str
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


Abandoned = Callable[[str, str], None]
"""``on_abandon(whole_id, owner)``: told of each payload the budget made the reassembler give up."""


class Reassembler:
    """Collects chunks (in any order, duplicates ignored) until a payload is whole.

    Memory is bounded by `max_bytes`, shared fairly by the owners of incomplete payloads (the
    cloud's consumer passes the sending edge): past it, the owner holding the most bytes gives
    up its own oldest incomplete payload (on a tie, the owner whose chunk was just added), until
    the total fits again. So one owner's flood never evicts another owner's payload while it
    holds more than that other; each one given up is reported to `on_abandon`, so that its
    receiver can acknowledge and dead-letter the messages it held for it.

    Args:
        max_bytes: the most chunk bytes held across all owners; a single payload larger than
            this is refused outright.
        on_abandon: called (synchronously) with (whole id, owner) of each payload given up to
            keep within `max_bytes`.

    """

    def __init__(self, *, max_bytes: int = 256 << 20, on_abandon: Abandoned | None = None) -> None:
        self._partials: OrderedDict[str, _Partial] = OrderedDict()
        self._owner_bytes: dict[str, int] = {}
        self._bytes = 0
        self._on_abandon = on_abandon
        self.max_bytes = max_bytes
        self.abandoned = 0

    @staticmethod
    def is_chunk(hdrs: Mapping[str, str] | None) -> bool:
        """True when a message is one chunk of a larger payload."""
        return bool(hdrs) and headers.CHUNK in (hdrs or {})

    def add(
        self, hdrs: Mapping[str, str], data: bytes, *, owner: str = ""
    ) -> tuple[str, bytes] | None:
        """Add one chunk; return (message id, whole payload) when it was the missing one.

        A chunk whose index is already held is ignored (the first copy is kept). Adding may
        give up older incomplete payloads, this one included (see the class docstring).

        Raises:
            IntegrityError: the reassembled payload's sha256 differs from the sent one.
            MalformedChunk: the chunk headers are missing, not numbers, out of range, or
                disagree with the payload's other chunks; or the payload's chunks so far
                exceed `max_bytes` (it is forgotten).

        """
        whole_id, index, count, digest = chunk_headers(hdrs)
        partial = self._partials.get(whole_id)
        if partial is None:
            partial = _Partial(owner=owner, count=count, digest=digest)
            self._partials[whole_id] = partial
        if (count, digest) != (partial.count, partial.digest):
            raise MalformedChunk(f"chunk {index}/{count} of {whole_id} disagrees with its siblings")
        if index not in partial.parts:
            partial.parts[index] = data
            partial.size += len(data)
            self._bytes += len(data)
            self._owner_bytes[partial.owner] = self._owner_bytes.get(partial.owner, 0) + len(data)
        if partial.size > self.max_bytes:
            self.discard(whole_id)
            raise MalformedChunk(f"payload {whole_id} is larger than {self.max_bytes} bytes")
        if len(partial.parts) < partial.count:
            self._trim(partial.owner)
            return None
        self.discard(whole_id)
        payload = b"".join(partial.parts[i] for i in range(partial.count))
        actual = hashlib.sha256(payload).hexdigest()
        if actual != partial.digest:
            raise IntegrityError(whole_id, partial.digest, actual)
        return whole_id, payload

    def discard(self, whole_id: str) -> None:
        """Forget a payload's chunks (its receiver gave up on it); nothing if unknown."""
        partial = self._partials.pop(whole_id, None)
        if partial is None:
            return
        self._bytes -= partial.size
        left = self._owner_bytes.pop(partial.owner, 0) - partial.size
        if left:
            self._owner_bytes[partial.owner] = left

    def holding(self, owner: str = "") -> int:
        """Bytes of incomplete payloads `owner` holds now."""
        return self._owner_bytes.get(owner, 0)

    def _trim(self, adder: str) -> None:
        while len(self._partials) > 1 and self._bytes > self.max_bytes:
            owner = max(self._owner_bytes, key=lambda o: (self._owner_bytes[o], o == adder))
            whole_id = next(w for w, p in self._partials.items() if p.owner == owner)
            self.discard(whole_id)
            self.abandoned += 1
            if self._on_abandon is not None:
                self._on_abandon(whole_id, owner)


def chunk_headers(hdrs: Mapping[str, str]) -> tuple[str, int, int, str]:
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
