"""Federated rounds over a real hub nats-server with five simulated non-IID edges."""

from __future__ import annotations

import asyncio

import pytest

from aggregator.edge_trainer import Behaviour
from aggregator.errors import JobFailed
from aggregator.job import JobConfig
from aggregator.trainer import TrainConfig, accuracy, init_weights, local_train, model_bytes
from tests.aggregator.rig import EDGES, digits, run_job
from tests.conftest import NatsLink
from tests.support import wait_for


def centralised_accuracy() -> float:
    split = digits()
    weights = local_train(
        init_weights(0, 0), split.x_train, split.y_train, TrainConfig(epochs=40, lr=0.3, batch=16)
    )
    return accuracy(weights, split.x_test, split.y_test)


async def test_fedavg_on_five_non_iid_edges_reaches_centralised_minus_two_points(
    nats_link: NatsLink,
) -> None:
    target = centralised_accuracy() - 0.02
    config = JobConfig(job="fedavg", edges=EDGES, rounds=20, target_accuracy=target)
    records, trainers, _ = await run_job(nats_link.hub.url, config)
    assert records[-1].accuracy is not None
    assert records[-1].accuracy >= target, [r.accuracy for r in records]
    assert len(records) <= 20
    assert all(r.status == "completed" and r.reason == "all answered" for r in records)
    await wait_for(lambda: all(t.final_weights is not None for t in trainers), 10, what="final")


async def test_one_dead_edge_rounds_still_complete_after_the_timeout(nats_link: NatsLink) -> None:
    config = JobConfig(job="dead", edges=EDGES, rounds=3, round_timeout_s=2.0)
    async with asyncio.timeout(60):
        records, trainers, _ = await run_job(nats_link.hub.url, config, {"edge-3": Behaviour.DEAD})
    assert [r.status for r in records] == ["completed"] * 3
    for r in records:
        assert r.missing == ["edge-3"]
        assert "timeout after 2 s" in r.reason
        assert r.answered == [e for e in EDGES if e != "edge-3"]
    assert records[-1].accuracy is not None
    assert records[0].accuracy is not None
    assert records[-1].accuracy > records[0].accuracy


async def test_too_few_answers_fail_the_round_and_stop_the_job_bounded(
    nats_link: NatsLink,
) -> None:
    dead = dict.fromkeys(EDGES[1:], Behaviour.DEAD)
    config = JobConfig(
        job="starved", edges=EDGES, rounds=10, round_timeout_s=1.0, max_failed_rounds=2
    )
    with pytest.raises(JobFailed) as info:
        async with asyncio.timeout(30):
            await run_job(nats_link.hub.url, config, dead)
    assert info.value.round == 2
    assert "2 failed rounds in a row" in info.value.reason


async def test_robust_strategies_keep_accuracy_while_fedavg_degrades_under_attack(
    nats_link: NatsLink,
) -> None:
    # Milder skew (Dirichlet 1.0) than the convergence test: median and Krum pay for strong
    # label skew even without an attacker (they discard honest but unusual edges), which is
    # the known price of robustness, not what this test is about.
    url = nats_link.hub.url
    clean, *_ = await run_job(url, JobConfig(job="clean", edges=EDGES, rounds=10), alpha=1.0)
    clean_acc = clean[-1].accuracy
    assert clean_acc is not None
    results: dict[tuple[Behaviour, str], float | None] = {}
    for attack in (Behaviour.SCALED, Behaviour.RANDOM):
        for name, options in (
            ("fedavg", {}),
            ("fedmedian", {}),
            ("krum", {"num_malicious": 1, "keep": 3}),
        ):
            config = JobConfig(
                job=f"{attack}-{name}",
                edges=EDGES,
                rounds=10,
                strategy=name,
                strategy_options=options,
            )
            records, *_ = await run_job(url, config, {"edge-2": attack}, alpha=1.0)
            assert all(r.answered == EDGES for r in records)
            results[attack, name] = records[-1].accuracy
    for attack in (Behaviour.SCALED, Behaviour.RANDOM):
        fedavg, median, krum = (results[attack, n] for n in ("fedavg", "fedmedian", "krum"))
        assert fedavg is not None and median is not None and krum is not None
        # Measured (10 rounds, 2 cores): clean ~0.95; under attack FedAvg 0.1-0.3, median
        # and MultiKrum 0.90-0.93.
        assert fedavg < clean_acc - 0.50, results
        assert median >= clean_acc - 0.06, results
        assert krum >= clean_acc - 0.06, results


async def test_weights_past_one_megabyte_travel_chunked_both_ways(nats_link: NatsLink) -> None:
    # 64x4000 + 4000x10 float32 weights: ~1.2 MB, past NATS's default 1 MB max payload, so
    # the global goes down and every update comes up in chunks and is reassembled.
    config = JobConfig(job="big", edges=EDGES, rounds=1, hidden=4000, round_timeout_s=60)
    assert model_bytes(init_weights(4000, 0)) > 1 << 20
    records, trainers, coordinator = await run_job(nats_link.hub.url, config)
    assert records[0].status == "completed"
    assert records[0].answered == EDGES
    assert [w.shape for w in coordinator.weights] == [(64, 4000), (4000,), (4000, 10), (10,)]
    await wait_for(lambda: all(t.final_weights is not None for t in trainers), 20, what="final")
