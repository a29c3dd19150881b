"""Coordinator edge cases, driven by a scripted transport (the rounds over NATS are in
test_rounds.py): stale replays, strangers, a downlink that refuses the global model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from aggregator.coordinator import Coordinator
from aggregator.errors import JobFailed
from aggregator.job import JobConfig
from aggregator.trainer import init_weights
from cloud_bridge.errors import BridgeError
from schemas.federated import FitInstruction, FitUpdate, decode_fit, encode_update

Script = Callable[[FitInstruction, list[np.ndarray]], list[tuple[str, bytes]]]


class ScriptedTransport:
    """Answers each global model with the frames `script` returns for it."""

    def __init__(self, script: Script, *, refuse: bool = False) -> None:
        self._script = script
        self._refuse = refuse
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=100)
        self.sent = 0

    async def send_global(self, frame: bytes) -> None:
        if self._refuse:
            raise BridgeError("hub unavailable")
        self.sent += 1
        instruction, weights = decode_fit(frame)
        if not instruction.final:
            for item in self._script(instruction, weights):
                self._queue.put_nowait(item)

    async def updates(self) -> AsyncIterator[tuple[str, bytes]]:
        while True:
            yield await self._queue.get()


def update(
    edge: str, instruction: FitInstruction, weights: list[np.ndarray], *, echo: str | None = None
) -> tuple[str, bytes]:
    header = FitUpdate(
        job=instruction.job,
        round=instruction.round,
        edge=edge,
        instruction=instruction.message_id if echo is None else echo,
        num_examples=10,
    )
    return edge, encode_update(header, [w.astype(np.float32) for w in weights])


async def run(config: JobConfig, transport: ScriptedTransport) -> Coordinator:
    coordinator = Coordinator(config, transport, initial=init_weights(0, 0))
    async with asyncio.timeout(10), coordinator:
        await coordinator.run()
    return coordinator


async def test_an_update_replayed_from_an_earlier_run_is_late_not_aggregated() -> None:
    def script(ins: FitInstruction, w: list[np.ndarray]) -> list[tuple[str, bytes]]:
        poison = [np.full_like(x, 1000.0) for x in w]
        return [update("a", ins, poison, echo="an-earlier-run")] + [
            update(e, ins, w) for e in ("a", "b")
        ]

    config = JobConfig(job="replay", edges=["a", "b"], rounds=1, accept_failures=False)
    coordinator = await run(config, ScriptedTransport(script))
    (record,) = coordinator.records
    assert (record.status, record.late, record.answered) == ("completed", 1, ["a", "b"])
    assert max(float(np.abs(w).max()) for w in coordinator.weights) < 10


async def test_a_stranger_neither_ends_the_round_early_nor_fails_it() -> None:
    sampled: list[list[str]] = []

    def script(ins: FitInstruction, w: list[np.ndarray]) -> list[tuple[str, bytes]]:
        sampled.append(ins.participants)
        (stranger,) = {"a", "b", "c"} - set(ins.participants)
        return [update(stranger, ins, w)] + [update(e, ins, w) for e in ins.participants]

    config = JobConfig(
        job="stranger", edges=["a", "b", "c"], rounds=2, fraction_fit=0.6, accept_failures=False
    )
    coordinator = await run(config, ScriptedTransport(script))
    for record, asked in zip(coordinator.records, sampled, strict=True):
        assert record.status == "completed", record.reason
        assert record.answered == sorted(asked) and len(asked) == 2
        assert list(record.rejected.values()) == ["not sampled for this round"]


async def test_a_refused_global_model_fails_the_round_at_once() -> None:
    config = JobConfig(
        job="down", edges=["a", "b"], rounds=5, round_timeout_s=60, max_failed_rounds=2
    )
    coordinator = Coordinator(
        config, ScriptedTransport(lambda i, w: [], refuse=True), initial=init_weights(0, 0)
    )
    with pytest.raises(JobFailed):
        async with asyncio.timeout(10), coordinator:
            await coordinator.run()
    assert [r.status for r in coordinator.records] == ["failed", "failed"]
    assert "global model not sent: hub unavailable" in coordinator.records[0].rejected["<cloud>"]
