"""Hostile payloads for the fuzz tests, generated deterministically by hypothesis.

The payloads are drawn once per test (derandomized, bounded) and then published through a
real broker to a running service, so one service instance must survive all of them in a row,
which is the promise: no payload crashes a service.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from schemas.codec import MAX_JSON_PAYLOAD

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_hostile_values = st.one_of(
    st.sampled_from(
        ["a/#", "+", "x\x00y", "", "a" * 300, "$SYS/x", "a.b.>", "../etc/passwd", "\u202e"]
    ),
    _json,
)

FIXED_HOSTILE: tuple[bytes, ...] = (
    b"",
    b"{",
    b"\xff\xfe\x00garbage",
    b"[" * 20_000 + b"]" * 20_000,  # nesting bomb: the parser's depth limit must hold
    b'{"kind": "reading", "device": "' + b"a" * (MAX_JSON_PAYLOAD + 1) + b'"}',  # too big
    b"null",
    b'{"schema_version": 999}',
)
"""Hand-picked payloads every inbound topic gets in addition to the generated ones."""


def hostile_payloads(
    valid: dict[str, Any], is_accepted: Callable[[bytes], bool], *, examples: int = 30
) -> list[bytes]:
    """Malformed, mutated and oversized payloads the service must refuse.

    Args:
        valid: a valid message of the topic's kind, as a JSON object; mutants replace or drop
            one of its fields.
        is_accepted: the service's own acceptance rule; drawn payloads it would accept are
            discarded, so every payload returned must end in a dead letter.
        examples: how many generated payloads (on top of `FIXED_HOSTILE`).
    """
    drawn: list[bytes] = []

    def mutant(field: str, value: object, drop: bool) -> bytes:
        body = dict(valid)
        if drop:
            body.pop(field, None)
        else:
            body[field] = value
        return json.dumps(body).encode()

    payloads = st.one_of(
        st.binary(max_size=256),
        _json.map(lambda v: json.dumps(v).encode()),
        st.builds(mutant, st.sampled_from(sorted(valid)), _hostile_values, st.booleans()),
    )

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    )
    @given(payloads)
    def collect(payload: bytes) -> None:
        assume(not is_accepted(payload))
        drawn.append(payload)

    collect()
    return [*FIXED_HOSTILE, *drawn]
