"""Hard-example mining: Sedna's formulas against hand-computed values, and its edge cases."""

from __future__ import annotations

import math

import pytest

from pipelines.breaker import BreakerState, CircuitBreaker
from pipelines.hem import IBT, CloudOnly, CrossEntropy, EdgeOnly, HemSettings, Random, Threshold


def test_threshold_is_hard_when_the_mean_score_is_below_it():
    assert Threshold(0.5)([0.4, 0.5])[0] is True  # mean 0.45
    assert Threshold(0.5)([0.6, 0.5])[0] is False  # mean 0.55
    assert Threshold(0.5)([0.5])[0] is False  # not strictly below


def test_cross_entropy_confidence_matches_the_formula():
    p = [0.7, 0.2, 0.1]
    by_hand = 1 + (0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    assert CrossEntropy.confidence(p) == pytest.approx(by_hand)  # 0.27...
    assert CrossEntropy(0.5)(p)[0] is True
    assert CrossEntropy(0.2)(p)[0] is False


def test_cross_entropy_is_certain_for_one_hot_and_lost_for_uniform():
    assert CrossEntropy.confidence([1.0, 0.0, 0.0]) == pytest.approx(1.0)  # p = 0 guarded
    assert CrossEntropy.confidence([0.25] * 4) == pytest.approx(0.0)


def test_cross_entropy_guards_a_single_class_and_bad_probabilities():
    assert CrossEntropy.confidence([1.0]) == 1.0  # K = 1: no division by ln 1
    assert CrossEntropy()([1.0])[0] is False
    assert CrossEntropy()([0.5, float("nan")])[0] is True
    assert CrossEntropy()([1.5, -0.5])[0] is True


def test_ibt_counts_the_share_of_weak_boxes():
    # 2 of 4 boxes <= 0.5: 50 % >= 1 - 0.5 -> hard
    assert IBT(0.5, 0.5)([0.9, 0.8, 0.5, 0.1])[0] is True
    # 1 of 4: 25 % < 50 % -> not hard
    assert IBT(0.5, 0.5)([0.9, 0.8, 0.7, 0.1])[0] is False
    # threshold_img 0.8: hard once 20 % are weak
    assert IBT(0.8, 0.5)([0.9, 0.8, 0.7, 0.6, 0.1])[0] is True


@pytest.mark.parametrize("hem", [Threshold(), CrossEntropy(), IBT(), CloudOnly()])
def test_an_empty_output_is_hard(hem):
    hard, reason = hem([])
    assert hard is True
    assert reason in {"empty output", "cloud only"}


def test_random_sends_about_its_ratio_and_is_reproducible_with_a_seed():
    first = [Random(0.3, seed=7)([0.9])[0] for _ in range(1)]
    hem = Random(0.3, seed=7)
    picks = [hem([0.9])[0] for _ in range(10_000)]
    assert 0.28 < sum(picks) / len(picks) < 0.32
    assert first[0] == picks[0]


def test_cloud_only_and_edge_only():
    assert CloudOnly()([0.99])[0] is True
    assert EdgeOnly()([0.01])[0] is False
    assert EdgeOnly()([])[0] is False


def test_settings_build_the_filter_sedna_names():
    assert isinstance(HemSettings(method="IBT").build(), IBT)
    assert HemSettings().build().name == "CrossEntropy"
    with pytest.raises(ValueError, match="method"):
        HemSettings(method="Entropy")  # type: ignore[arg-type]


def test_breaker_opens_after_consecutive_failures_and_half_opens_after_the_reset():
    now = [0.0]
    breaker = CircuitBreaker(failures=3, reset_s=2.0, clock=lambda: now[0])
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    now[0] = 2.5
    assert breaker.allow()  # the one trial
    assert not breaker.allow()  # no second trial while it is out
    breaker.success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_a_failed_trial_reopens_the_breaker():
    now = [0.0]
    breaker = CircuitBreaker(failures=1, reset_s=1.0, clock=lambda: now[0])
    breaker.failure()
    now[0] = 1.5
    assert breaker.allow()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened == 2
