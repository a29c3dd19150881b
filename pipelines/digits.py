"""The offload and joint-inference models: trained here, in numpy, on scikit-learn's digits.

scikit-learn bundles the 1,797 8x8 handwritten digits (no download), which stand in for the
talk's phone photos: the phone scales an image to 8x8 grey levels, the edge classifies it.

* the **edge** model is softmax regression (650 parameters, ~96 % on the test split);
* the **cloud** model is an MLP with hidden layers of 256 and 128 (~50k parameters,
  ~98 %), the "deep" model.

Both are exported as ONNX graphs with input ``pixels`` (float32 [N, 64], grey levels scaled
to 0..1) and output ``probabilities`` (float32 [N, 10]). Training is seeded, so a build is
reproducible; `build_models` caches the files so it runs once per data directory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

INPUT = "pixels"
OUTPUT = "probabilities"
PIXELS = 64
CLASSES = 10
EDGE_MODEL = "digits-edge"
CLOUD_MODEL = "digits-cloud"

Array = NDArray[np.float32]
Weights = list[Array]


@dataclass(frozen=True)
class DigitsSplit:
    """Train / validation / test split of the digits (features scaled to 0..1)."""

    x_train: Array
    y_train: NDArray[np.int64]
    x_val: Array
    y_val: NDArray[np.int64]
    x_test: Array
    y_test: NDArray[np.int64]


def load_digits_split(seed: int = 0) -> DigitsSplit:
    """The bundled digits, shuffled with `seed` and split 60 / 20 / 20."""
    from sklearn.datasets import load_digits  # noqa: PLC0415 - heavy import, used only here

    data = load_digits()
    x = (np.asarray(data.data, dtype=np.float32) / 16.0).astype(np.float32)
    y = np.asarray(data.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    return DigitsSplit(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])


def _softmax(z: NDArray[np.float64]) -> NDArray[np.float64]:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def forward(weights: Weights, x: Array) -> NDArray[np.float64]:
    """Class probabilities of a softmax regression ([W, b]) or an MLP ([W1, b1, ...])."""
    h: NDArray[np.float64] = x.astype(np.float64)
    for i in range(0, len(weights) - 2, 2):
        h = np.maximum(h @ weights[i] + weights[i + 1], 0.0)
    return _softmax(h @ weights[-2] + weights[-1])


def accuracy(weights: Weights, x: Array, y: NDArray[np.int64]) -> float:
    """Share of samples whose most probable class is the label."""
    return float((forward(weights, x).argmax(axis=1) == y).mean())


def train(
    x: Array,
    y: NDArray[np.int64],
    *,
    hidden: tuple[int, ...] = (),
    epochs: int = 60,
    lr: float = 0.1,
    batch: int = 32,
    l2: float = 1e-4,
    seed: int = 0,
    init: Weights | None = None,
) -> Weights:
    """Mini-batch SGD with cross-entropy; `hidden=()` is softmax regression.

    `init` warm-starts from deployed weights (incremental learning).
    """
    rng = np.random.default_rng(seed)
    sizes = [x.shape[1], *hidden, CLASSES]
    if init is not None:
        weights = [w.astype(np.float64) for w in init]
    else:
        weights = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            weights.append(rng.normal(0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)))
            weights.append(np.zeros(fan_out))
    onehot = np.eye(CLASSES)[y]
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            _sgd_step(weights, x[idx].astype(np.float64), onehot[idx], lr=lr, l2=l2)
    return [w.astype(np.float32) for w in weights]


def _sgd_step(
    weights: list[NDArray[np.float64]],
    x: NDArray[np.float64],
    target: NDArray[np.float64],
    *,
    lr: float,
    l2: float,
) -> None:
    activations = [x]
    for i in range(0, len(weights) - 2, 2):
        activations.append(np.maximum(activations[-1] @ weights[i] + weights[i + 1], 0.0))
    grad = (_softmax(activations[-1] @ weights[-2] + weights[-1]) - target) / len(x)
    for layer in range(len(weights) // 2 - 1, -1, -1):
        w, a = weights[2 * layer], activations[layer]
        grad_w = a.T @ grad + l2 * w
        grad_b = grad.sum(axis=0)
        if layer:
            grad = (grad @ w.T) * (a > 0)
        weights[2 * layer] -= lr * grad_w
        weights[2 * layer + 1] -= lr * grad_b


def to_onnx(weights: Weights, *, name: str, version: str) -> bytes:
    """The ONNX graph of a softmax regression or MLP: pixels[N,64] -> probabilities[N,10]."""
    inits, nodes = [], []
    current = INPUT
    layers = len(weights) // 2
    for layer in range(layers):
        w, b = f"w{layer}", f"b{layer}"
        inits += [
            numpy_helper.from_array(weights[2 * layer].astype(np.float32), w),
            numpy_helper.from_array(weights[2 * layer + 1].astype(np.float32), b),
        ]
        out = f"z{layer}"
        nodes.append(helper.make_node("Gemm", [current, w, b], [out]))
        current = out
        if layer < layers - 1:
            nodes.append(helper.make_node("Relu", [out], [f"h{layer}"]))
            current = f"h{layer}"
    nodes.append(helper.make_node("Softmax", [current], [OUTPUT], axis=1))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", PIXELS])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="edgefabric"
    )
    model.ir_version = 9
    model.doc_string = f"{name} {version}"
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


@dataclass(frozen=True)
class DigitsModels:
    """Paths of the two built models, and their test accuracy."""

    edge: Path
    cloud: Path
    edge_accuracy: float
    cloud_accuracy: float


def train_edge(split: DigitsSplit, *, init: Weights | None = None) -> Weights:
    """The shallow edge model: softmax regression on the 64 pixels (one Gemm at the edge)."""
    return train(split.x_train, split.y_train, epochs=40, lr=0.2, seed=1, init=init)


def train_cloud(split: DigitsSplit) -> Weights:
    """The deep cloud model: an MLP with hidden layers of 256 and 128."""
    return train(split.x_train, split.y_train, hidden=(256, 128), epochs=80, lr=0.05, seed=2)


BUNDLED = Path(__file__).parent / "models"
"""Where the repo ships the two models, built by `python -m pipelines.digits`."""


def bundled_models(version: str = "1") -> tuple[Path, Path]:
    """The shipped edge and cloud model files.

    They are what `build_models` produces, kept in the repo (3 KB and 200 KB) so an edge never
    has to import scikit-learn (~90 MB resident) or train at start-up.
    """
    return BUNDLED / f"{EDGE_MODEL}-v{version}.onnx", BUNDLED / f"{CLOUD_MODEL}-v{version}.onnx"


def build_models(directory: Path, *, version: str = "1") -> DigitsModels:
    """Train and export both models into `directory`, unless they are already there."""
    directory.mkdir(parents=True, exist_ok=True)
    edge_path = directory / f"{EDGE_MODEL}-v{version}.onnx"
    cloud_path = directory / f"{CLOUD_MODEL}-v{version}.onnx"
    split = load_digits_split()
    if not (edge_path.exists() and cloud_path.exists()):
        edge_weights, cloud_weights = train_edge(split), train_cloud(split)
        _atomic_write(edge_path, to_onnx(edge_weights, name=EDGE_MODEL, version=version))
        _atomic_write(cloud_path, to_onnx(cloud_weights, name=CLOUD_MODEL, version=version))
    return DigitsModels(
        edge=edge_path,
        cloud=cloud_path,
        edge_accuracy=_onnx_accuracy(edge_path, split),
        cloud_accuracy=_onnx_accuracy(cloud_path, split),
    )


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _onnx_accuracy(path: Path, split: DigitsSplit) -> float:
    import onnxruntime as ort  # noqa: PLC0415 - keeps `import pipelines.digits` light

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run([OUTPUT], {INPUT: split.x_test})
    return float((np.asarray(probabilities).argmax(axis=1) == split.y_test).mean())


if __name__ == "__main__":
    built = build_models(BUNDLED)
    print(f"edge  {built.edge}  test accuracy {built.edge_accuracy:.4f}")
    print(f"cloud {built.cloud}  test accuracy {built.cloud_accuracy:.4f}")
