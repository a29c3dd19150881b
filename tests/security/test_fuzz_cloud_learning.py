"""Hard examples from a possibly compromised edge, at the cloud's labeller.

Promise: a hostile hard-example frame is refused with a reason before it is stored (the
learning service dead-letters it on ``ef.cloud.dead-letter.learning``); valid ones are
still stored and labelled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from aggregator.labelling import Labeller, Outcome
from aggregator.store import HardExampleStore
from schemas.frames import pack
from schemas.hard_examples import HardExample
from schemas.inference import Prediction
from schemas.tensor import encode_tensor
from tests.security.fuzz import hostile_payloads
from tests.security.test_fuzz_cloud import FEATURES, _hostile_tensors


def _example(body: bytes, **header: object) -> bytes:
    fields: dict[str, object] = {
        "pipeline": "vision",
        "model": "digits",
        "model_version": "1",
        "reason": "unsure",
        "edge_result": Prediction(label=1, confidence=0.4, probabilities=[], model_version="1"),
        "dedupe_key": hashlib.sha256(body).hexdigest(),
        **header,
    }
    return pack(HardExample.model_validate(fields), body)


async def test_hostile_hard_examples_are_refused_with_a_reason_before_they_are_stored(
    tmp_path: Path,
) -> None:
    store = HardExampleStore(tmp_path / "learning")
    labeller = Labeller(store, classify=lambda x: (int(x.size), 0.99), input_size=FEATURES)
    good = encode_tensor(np.zeros(FEATURES, dtype=np.float32))
    hostile = [
        *dict.fromkeys(hostile_payloads({"pipeline": "vision"}, lambda _: False, examples=15)),
        *(_example(t) for t in _hostile_tensors()),  # wrong sizes, nan, inf, past float32
        _example(good, dedupe_key="0" * 64),  # not its sha256
    ]
    try:
        for frame in hostile:
            assert await labeller.handle("edge-1", frame) is Outcome.INVALID
            assert labeller.last_refusal
            labeller.last_refusal = ""
        assert await labeller.handle("edge-1", _example(good)) is Outcome.AUTO_LABELLED
        assert labeller.counters.invalid == len(hostile)
        assert (store.counts()["examples"], store.counts()["bytes"]) == (1, len(good))
    finally:
        store.close()
