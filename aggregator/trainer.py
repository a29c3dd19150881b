"""The local trainer: softmax regression or a one-hidden-layer MLP on the 8x8 digits, in numpy.

Used by the edge trainer (federated rounds, data never leaves the edge) and by the cloud's
incremental retraining (warm start from the deployed weights). Weights use the layout of
`pipelines.digits` ([W, b] or [W1, b1, W2, b2]) so the same `to_onnx` export serves both:
input ``pixels`` float32 [N, 64] scaled to 0..1, output ``probabilities`` float32 [N, 10].

FedProx: with ``mu > 0`` each step adds the gradient of mu/2 ||w - w_t||^2, w_t being the
weights the round started from, which keeps a client on skewed data near the global model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aggregator.strategies import Weights
from pipelines.digits import CLASSES, PIXELS, accuracy, forward, to_onnx

__all__ = [
    "TrainConfig",
    "accuracy",
    "dirichlet_split",
    "forward",
    "init_weights",
    "local_train",
    "model_bytes",
    "to_onnx",
    "weights_from_onnx",
]

Labels = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Local training knobs a round sends to its clients (Flower's ``config`` dict)."""

    epochs: int = 1
    lr: float = 0.1
    batch: int = 32
    l2: float = 1e-4
    proximal_mu: float = 0.0


def init_weights(hidden: int = 0, seed: int = 0) -> Weights:
    """He-initialised weights; `hidden=0` is softmax regression (650 parameters)."""
    rng = np.random.default_rng(seed)
    sizes = [PIXELS, hidden, CLASSES] if hidden else [PIXELS, CLASSES]
    weights: Weights = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        weights.append(rng.normal(0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)).astype(np.float32))
        weights.append(np.zeros(fan_out, dtype=np.float32))
    return weights


def hidden_for_bytes(size: int) -> int:
    """Hidden width whose float32 weights take about `size` bytes (for the bench)."""
    per_unit = (PIXELS + 1 + CLASSES) * 4
    return max(1, (size - CLASSES * 4) // per_unit)


def model_bytes(weights: Weights) -> int:
    """Size of the weights as float32."""
    return sum(int(w.size) * 4 for w in weights)


def local_train(
    weights: Weights,
    x: NDArray[np.float32],
    y: Labels,
    config: TrainConfig,
    *,
    seed: int = 0,
) -> Weights:
    """Mini-batch SGD on cross-entropy from `weights` (warm start), with the FedProx term.

    Returns:
        New weights (float32); `weights` is not modified.

    """
    rng = np.random.default_rng(seed)
    anchor = [w.astype(np.float64) for w in weights]
    current = [w.copy() for w in anchor]
    onehot = np.eye(CLASSES)[y]
    for _ in range(config.epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), config.batch):
            idx = order[start : start + config.batch]
            grads = _gradients(current, x[idx].astype(np.float64), onehot[idx])
            for i, grad in enumerate(grads):
                step = grad + config.l2 * current[i] * (i % 2 == 0)
                if config.proximal_mu:
                    step = step + config.proximal_mu * (current[i] - anchor[i])
                current[i] -= config.lr * step
    return [w.astype(np.float32) for w in current]


def _gradients(
    weights: list[NDArray[np.float64]], x: NDArray[np.float64], target: NDArray[np.float64]
) -> list[NDArray[np.float64]]:
    activations = [x]
    for i in range(0, len(weights) - 2, 2):
        activations.append(np.maximum(activations[-1] @ weights[i] + weights[i + 1], 0.0))
    z = activations[-1] @ weights[-2] + weights[-1]
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    delta = (p - target) / len(x)
    grads: list[NDArray[np.float64]] = [np.empty(0)] * len(weights)
    for layer in range(len(weights) // 2 - 1, -1, -1):
        a = activations[layer]
        grads[2 * layer] = a.T @ delta
        grads[2 * layer + 1] = delta.sum(axis=0)
        if layer:
            delta = (delta @ weights[2 * layer].T) * (a > 0)
    return grads


def dirichlet_split(
    y: Labels, edges: int = 5, alpha: float = 0.5, seed: int = 0, min_size: int = 20
) -> list[NDArray[np.int64]]:
    """Non-IID label skew: each class is shared among edges by Dirichlet(alpha) proportions.

    The usual FL benchmark split (Hsu et al. 2019): smaller alpha, more skew. Re-drawn (same
    seed sequence) until every edge has at least `min_size` samples.

    Returns:
        One index array per edge into `y`.

    """
    rng = np.random.default_rng(seed)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(edges)]
        for label in range(CLASSES):
            idx = rng.permutation(np.flatnonzero(y == label))
            shares = rng.dirichlet(np.full(edges, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for edge, chunk in enumerate(np.split(idx, cuts)):
                parts[edge].extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= min_size:
            return [np.array(sorted(p), dtype=np.int64) for p in parts]
    raise ValueError(f"no Dirichlet({alpha}) split gives {edges} edges {min_size} samples each")


def weights_from_onnx(model: bytes) -> Weights:
    """The [W, b, ...] weights of a graph exported by `to_onnx` (its ``w{i}``/``b{i}``).

    Raises:
        ValueError: the graph has no such initializers.

    """
    import onnx  # noqa: PLC0415 - only the cloud reads weights back
    from onnx import numpy_helper  # noqa: PLC0415

    inits = {
        i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(model).graph.initializer
    }
    weights: Weights = []
    for layer in range(len(inits) // 2):
        if f"w{layer}" not in inits or f"b{layer}" not in inits:
            raise ValueError(f"layer {layer} missing: not a graph from to_onnx")
        weights += [
            np.asarray(inits[f"w{layer}"], np.float32),
            np.asarray(inits[f"b{layer}"], np.float32),
        ]
    if not weights:
        raise ValueError("no weights in the graph")
    return weights
