"""Strategies against values worked out by hand (Flower's formulas)."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.errors import AggregationError
from aggregator.strategies import (
    ClientUpdate,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    clip_updates,
    krum_scores,
    make_strategy,
)


def one(values: list[float], n: int = 1, client: str = "") -> ClientUpdate:
    return ClientUpdate([np.array(values, dtype=np.float32)], n, client)


ZERO = [np.zeros(2, dtype=np.float32)]


def test_fedavg_weights_by_example_count() -> None:
    # (1*[0,0] + 3*[4,8]) / 4 = [3, 6]
    out = FedAvg().aggregate(ZERO, [one([0, 0], 1), one([4, 8], 3)], 1)
    np.testing.assert_allclose(out[0], [3.0, 6.0])
    assert out[0].dtype == np.float32


def test_fedprox_server_side_is_fedavg_and_carries_mu() -> None:
    strategy = FedProx(proximal_mu=0.5)
    out = strategy.aggregate(ZERO, [one([2, 2], 1), one([4, 4], 1)], 1)
    np.testing.assert_allclose(out[0], [3.0, 3.0])
    assert strategy.proximal_mu == 0.5


def test_fedmedian_ignores_one_outlier() -> None:
    ups = [one([1, 10]), one([2, 20]), one([3, 30]), one([1000, -1000])]
    np.testing.assert_allclose(FedMedian().aggregate(ZERO, ups, 1)[0], [2.5, 15.0])


def test_fedtrimmedavg_cuts_beta_from_each_tail() -> None:
    # n=5, beta=0.2 -> cut 1 each side: mean of the middle three.
    ups = [one([v, -v]) for v in (1.0, 2.0, 3.0, 4.0, 100.0)]
    np.testing.assert_allclose(FedTrimmedAvg().aggregate(ZERO, ups, 1)[0], [3.0, -3.0])


def test_fedtrimmedavg_refuses_to_trim_everything() -> None:
    with pytest.raises(AggregationError):
        FedTrimmedAvg(beta=0.5).aggregate(ZERO, [one([1, 1]), one([2, 2])], 1)


def test_krum_scores_sum_the_nearest_squared_distances() -> None:
    # Points 0, 1, 3, 10 on a line; n=4, f=0 -> 2 nearest each.
    ups = [one([0, 0]), one([1, 0]), one([3, 0]), one([10, 0])]
    np.testing.assert_allclose(krum_scores(ups, 0), [1 + 9, 1 + 4, 4 + 9, 49 + 81])
    # f=1 -> n-f-2 = 1 nearest.
    np.testing.assert_allclose(krum_scores(ups, 1), [1, 1, 4, 49])


def test_krum_picks_the_lowest_score_and_multikrum_averages_the_best() -> None:
    ups = [one([0, 0]), one([1, 0]), one([3, 0]), one([10, 0])]
    np.testing.assert_allclose(Krum().aggregate(ZERO, ups, 1)[0], [1.0, 0.0])
    np.testing.assert_allclose(Krum(keep=2).aggregate(ZERO, ups, 1)[0], [0.5, 0.0])


def test_fedadam_first_step_matches_the_formula() -> None:
    # d = 1; m = 0.1; v = 0.01; eta_norm = 0.1*sqrt(1-0.99^2)/(1-0.9^2) at round 1.
    strategy = FedAdam()
    out = strategy.aggregate(
        [np.zeros(1, np.float32)], [ClientUpdate([np.ones(1, np.float32)], 5)], 1
    )
    eta_norm = 0.1 * np.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    np.testing.assert_allclose(out[0], [eta_norm * 0.1 / (0.1 + 1e-9)], rtol=1e-6)
    # Second round, same pseudo-gradient from the new point: moments accumulate.
    w1 = out[0].astype(np.float64)
    out2 = strategy.aggregate(out, [ClientUpdate([np.float32(w1 + 1.0).reshape(1)], 5)], 2)
    m2, v2 = 0.9 * 0.1 + 0.1, 0.99 * 0.01 + 0.01
    eta2 = 0.1 * np.sqrt(1 - 0.99**3) / (1 - 0.9**3)
    np.testing.assert_allclose(out2[0], w1 + eta2 * m2 / (np.sqrt(v2) + 1e-9), rtol=1e-5)


def test_fedadam_defaults_are_flowers() -> None:
    s = FedAdam()
    assert (s.eta, s.eta_l, s.beta_1, s.beta_2, s.tau) == (0.1, 0.1, 0.9, 0.99, 1e-9)


def test_clipping_bounds_the_update_norm() -> None:
    (clipped,) = clip_updates(ZERO, [one([3, 4])], 1.0)  # norm 5 -> 1
    np.testing.assert_allclose(clipped.weights[0], [0.6, 0.8], rtol=1e-6)
    out = FedAvg(clip_norm=1.0).aggregate(ZERO, [one([3, 4]), one([0.3, 0.4])], 1)
    np.testing.assert_allclose(out[0], [0.45, 0.6], rtol=1e-6)


def test_mismatched_shapes_and_empty_rounds_are_typed_errors() -> None:
    with pytest.raises(AggregationError):
        FedAvg().aggregate(ZERO, [], 1)
    with pytest.raises(AggregationError):
        FedMedian().aggregate(ZERO, [one([1, 2, 3])], 1)
    with pytest.raises(AggregationError):
        make_strategy("fedsgd")


def test_make_strategy_passes_options() -> None:
    strategy = make_strategy("krum", num_malicious=1, keep=2)
    assert isinstance(strategy, Krum)
    assert (strategy.num_malicious, strategy.keep) == (1, 2)
