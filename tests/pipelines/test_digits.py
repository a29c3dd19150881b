"""The shipped digits models are what the project's own training code produces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipelines.digits import INPUT, bundled_models, forward, load_digits_split, train_edge


def _predict(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {INPUT: x})[0])


def test_shipped_models_have_the_documented_accuracy_on_the_held_out_split():
    split = load_digits_split()
    edge, cloud = bundled_models()
    edge_acc = (_predict(edge, split.x_test).argmax(1) == split.y_test).mean()
    cloud_acc = (_predict(cloud, split.x_test).argmax(1) == split.y_test).mean()
    assert edge_acc >= 0.95
    assert cloud_acc >= 0.975
    assert cloud_acc > edge_acc


def test_the_shipped_edge_model_is_what_training_produces():
    split = load_digits_split()
    retrained = forward(train_edge(split), split.x_test).argmax(1)
    shipped = _predict(bundled_models()[0], split.x_test).argmax(1)
    assert (retrained == shipped).mean() >= 0.99


def test_the_onnx_graph_computes_what_numpy_computes():
    split = load_digits_split()
    weights = train_edge(split)
    from pipelines.digits import to_onnx

    session = ort.InferenceSession(
        to_onnx(weights, name="t", version="1"), providers=["CPUExecutionProvider"]
    )
    onnx_p = session.run(None, {INPUT: split.x_test[:50]})[0]
    assert np.allclose(onnx_p, forward(weights, split.x_test[:50]), atol=1e-5)
