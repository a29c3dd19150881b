"""The edge trainer's global-model topic fuzzed through Mosquitto (`MqttEdgeLink`).

Promise: whatever arrives on ``ef/fl/{job}/global`` — garbage, a cut or forged frame, weights
of the wrong shape, dtype or size, nan weights, settings that make training diverge — the
trainer keeps running, each frame it cannot train on is one dead letter with its reason on
``ef/dead-letter/fl-trainer``, and a valid global afterwards is trained on and answered.
"""

from __future__ import annotations

import asyncio
import functools
import json
import struct
from collections.abc import AsyncIterator

import numpy as np
import pytest

from aggregator.edge_trainer import MAX_ROUND, EdgeTrainer
from aggregator.trainer import init_weights
from aggregator.transport import TRAINER_SERVICE, MqttEdgeLink
from bus.mqtt import MqttClient
from pipelines.digits import load_digits_split
from schemas import topics
from schemas.codec import encode
from schemas.errors import SchemaError
from schemas.federated import (
    WEIGHTS_MAGIC,
    FitInstruction,
    TrainSettings,
    decode_fit,
    decode_update,
    encode_fit,
    pack_weights,
)
from schemas.frames import MAGIC as FRAME_MAGIC
from schemas.frames import pack
from schemas.tensor import MAGIC as TENSOR_MAGIC
from schemas.tensor import encode_tensor
from tests.security.fuzz import Observer, hostile_payloads, observing, until_listening
from tests.support import wait_for

JOB = "job-1"
EDGE = "edge-1"
TOPIC = topics.fl_global(JOB)
GOOD = init_weights(0, 0)  # softmax regression: W [64, 10], b [10]
F32 = np.float32


def _fit(**overrides: object) -> FitInstruction:
    fields: dict[str, object] = {"job": JOB, "round": 0, "model": "digits", **overrides}
    return FitInstruction.model_validate(fields)


def _header_ok(header: bytes) -> bool:
    """Headers the trainer would act on (train, skip or keep as final): not hostile."""
    try:
        decode_fit(_frame(header, pack_weights(GOOD)))
    except SchemaError:
        return False
    instruction = FitInstruction.model_validate_json(header)
    return instruction.job == JOB and instruction.round <= MAX_ROUND


def _frame(header: bytes, body: bytes) -> bytes:
    return FRAME_MAGIC + struct.pack(">I", len(header)) + header + body


def _pack(*layers: bytes) -> bytes:
    """A weights pack of raw tensor frames (so they may lie)."""
    parts = [WEIGHTS_MAGIC, struct.pack("<I", len(layers))]
    for layer in layers:
        parts += [struct.pack("<I", len(layer)), layer]
    return b"".join(parts)


def _t(array: np.ndarray) -> bytes:
    return encode_tensor(np.ascontiguousarray(array))


def _hostile_weights() -> list[bytes]:
    w, b = GOOD
    return [
        b"",
        b"EFW0" + pack_weights(GOOD)[4:],  # wrong magic
        WEIGHTS_MAGIC + struct.pack("<I", 2**32 - 1),  # huge layer count
        WEIGHTS_MAGIC + struct.pack("<I", 2) + struct.pack("<I", 10**9),  # layer past the end
        pack_weights(GOOD)[:-7],  # truncated
        pack_weights(GOOD) + b"\x00",  # trailing bytes
        _pack(),  # no layers
        _pack(_t(w)),  # W without b
        _pack(_t(w.T), _t(b)),  # W transposed
        _pack(_t(w), _t(np.zeros(5, F32))),  # b of the wrong width
        _pack(_t(np.zeros((64, 7), F32)), _t(np.zeros(7, F32))),  # 7 classes
        _pack(_t(w), _t(b), _t(np.zeros((10, 10), F32))),  # odd layer count
        _pack(_t(w.astype(np.float64)), _t(b)),  # float64
        _pack(_t(w.astype(np.float16)), _t(b)),
        _pack(_t(np.full_like(w, np.nan)), _t(b)),  # nan weights
        _pack(_t(w), _t(np.full_like(b, np.inf))),
        _pack(TENSOR_MAGIC + struct.pack("<BB8I", 1, 8, *[2**32 - 1] * 8), _t(b)),  # huge shape
        _pack(TENSOR_MAGIC + struct.pack("<BB4I", 1, 4, *[2**16] * 4), _t(b)),  # wraps to 0
        _pack(_t(w)[:-3], _t(b)),  # body shorter than the shape
    ]


def _hostile_frames() -> list[bytes]:
    good = encode_fit(_fit(), GOOD)
    valid_header = json.loads(encode(_fit()))
    headers = hostile_payloads(valid_header, _header_ok, examples=25)
    return [
        b"garbage",
        good[:3],
        b"EFF0" + good[4:],  # wrong frame magic
        FRAME_MAGIC + struct.pack(">I", 2**32 - 1) + b"{}",  # header length past the end
        good[: len(good) // 2],  # cut in the weights
        *(_frame(h, pack_weights(GOOD)) for h in headers),
        encode_fit(_fit(job="job-2"), GOOD),  # another job's global on this job's topic
        encode_fit(_fit(round=MAX_ROUND + 1), GOOD),  # a forged far-future round
        encode_fit(_fit(round=2**62, final=True), GOOD),
        *(pack(_fit(), body) for body in _hostile_weights()),
        *(pack(_fit(final=True), body) for body in _hostile_weights()[6:12]),
        # Valid frames whose training overflows: refused after training, nothing sent.
        encode_fit(_fit(round=1, train=TrainSettings(lr=1e300, epochs=1)), GOOD),
    ]


def _at_least(observer: Observer, count: int) -> bool:
    return len(observer.letters(TRAINER_SERVICE)) >= count


@pytest.fixture
async def observed(mosquitto_url: str) -> AsyncIterator[tuple[MqttClient, Observer]]:
    async with observing(mosquitto_url) as pair:
        yield pair


async def test_edge_trainer_refuses_hostile_globals_and_trains_on_a_valid_one(
    mosquitto_url: str, observed: tuple[MqttClient, Observer]
) -> None:
    bus, observer = observed
    split = load_digits_split()
    frames = list(dict.fromkeys(_hostile_frames()))
    async with (
        MqttClient(mosquitto_url, client_id="edge") as edge_bus,
        asyncio.TaskGroup() as tg,
    ):
        trainer = EdgeTrainer(
            edge=EDGE,
            link=MqttEdgeLink(edge_bus, job=JOB),
            x=split.x_train[:60],
            y=split.y_train[:60],
        )
        task = tg.create_task(trainer.run())
        await until_listening(bus, observer, TRAINER_SERVICE, TOPIC)
        start = len(observer.letters(TRAINER_SERVICE))
        # One at a time: the link keeps only the newest globals (older ones are moot).
        for n, frame in enumerate(frames, start=1):
            await bus.publish(TOPIC, frame)
            await wait_for(
                functools.partial(_at_least, observer, start + n),
                what=f"a dead letter for hostile global {n - 1}: {frame[:60]!r}",
            )
        letters = observer.letters(TRAINER_SERVICE)[start:]
        assert [len(frame) for frame in frames] == [letter.payload_size for letter in letters]
        assert all(letter.topic == TOPIC and letter.reason for letter in letters)
        assert "diverged" in letters[-1].reason
        assert not task.done() and trainer.rounds_answered == 0
        assert trainer.final_weights is None

        await bus.publish(TOPIC, encode_fit(_fit(round=2, participants=[EDGE]), GOOD))
        update = topics.fl_update(JOB)
        await wait_for(lambda: observer.seen.get(update), what="the update for round 2")
        header, weights = decode_update(observer.seen[update][0])
        assert (header.job, header.round, header.edge) == (JOB, 2, EDGE)
        assert [w.shape for w in weights] == [w.shape for w in GOOD]
        assert trainer.rounds_answered == 1 and trainer.refused == len(frames) + 1  # + probe
        task.cancel()
