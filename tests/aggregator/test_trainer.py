"""The numpy trainer: learns, warm-starts, keeps FedProx clients near the anchor, exports ONNX."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from aggregator.trainer import (
    TrainConfig,
    accuracy,
    dirichlet_split,
    forward,
    init_weights,
    local_train,
    to_onnx,
)
from pipelines.digits import INPUT, OUTPUT
from tests.aggregator.rig import digits


def test_softmax_and_mlp_learn_the_digits() -> None:
    split = digits()
    config = TrainConfig(epochs=20, lr=0.3, batch=16)
    for hidden in (0, 32):
        weights = local_train(init_weights(hidden, 0), split.x_train, split.y_train, config)
        assert accuracy(weights, split.x_test, split.y_test) > 0.93, hidden


def test_warm_start_continues_from_the_given_weights() -> None:
    split = digits()
    start = local_train(init_weights(0, 0), split.x_train, split.y_train, TrainConfig(epochs=10))
    before = accuracy(start, split.x_test, split.y_test)
    one_more = local_train(start, split.x_train, split.y_train, TrainConfig(epochs=1))
    cold = local_train(init_weights(0, 0), split.x_train, split.y_train, TrainConfig(epochs=1))
    assert accuracy(one_more, split.x_test, split.y_test) >= before - 0.01
    assert accuracy(one_more, split.x_test, split.y_test) > accuracy(
        cold, split.x_test, split.y_test
    )


def test_fedprox_term_keeps_a_skewed_client_near_the_global_model() -> None:
    split = digits()
    only_zeros_and_ones = np.flatnonzero(split.y_train < 2)
    x, y = split.x_train[only_zeros_and_ones], split.y_train[only_zeros_and_ones]
    anchor = init_weights(0, 0)

    def drift(mu: float) -> float:
        trained = local_train(anchor, x, y, TrainConfig(epochs=5, lr=0.3, proximal_mu=mu))
        return float(sum(np.sum((t - a) ** 2) for t, a in zip(trained, anchor, strict=True)))

    assert drift(1.0) < 0.5 * drift(0.0)


def test_onnx_export_answers_like_numpy() -> None:
    split = digits()
    for hidden in (0, 16):
        weights = local_train(init_weights(hidden, 1), split.x_train, split.y_train, TrainConfig())
        session = ort.InferenceSession(
            to_onnx(weights, name="digits-edge", version="fl-1"),
            providers=["CPUExecutionProvider"],
        )
        (probabilities,) = session.run([OUTPUT], {INPUT: split.x_test})
        np.testing.assert_allclose(probabilities, forward(weights, split.x_test), atol=1e-5)


def test_dirichlet_split_is_label_skewed_disjoint_and_complete() -> None:
    y = digits().y_train
    parts = dirichlet_split(y, 5, alpha=0.5, seed=0)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(y)))
    shares = np.array([np.bincount(y[p], minlength=10) / len(p) for p in parts])
    # Label skew: some edge holds under 2 % of some class that is ~10 % overall.
    assert shares.min() < 0.02
    assert all(len(p) >= 20 for p in parts)
