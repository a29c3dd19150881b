"""A small anomaly model for a window of sensor readings, trained with numpy, exported to ONNX.

The model standardises each window with per-position statistics learned from normal data,
takes the mean squared z-score as the anomaly score, and maps it through a sigmoid centred on
a threshold (the 99.5th percentile of normal scores) to a probability. It is deliberately
tiny: the point is a real ONNX graph the project builds itself, served by ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

INPUT = "window"
SCORE = "score"
PROBABILITY = "anomaly"


@dataclass(frozen=True)
class AnomalyParams:
    """What training learned from normal windows."""

    mean: NDArray[np.float32]
    std: NDArray[np.float32]
    threshold: float
    sharpness: float


def train_anomaly_model(
    normal_windows: NDArray[np.floating], *, pooled: bool = True
) -> AnomalyParams:
    """Fit mean and spread on normal rows (shape: rows x features).

    Args:
        normal_windows: rows seen in normal operation.
        pooled: one mean and spread for every column (raw readings of a window are
            exchangeable, so few windows suffice); False fits each column (features).
    """
    if normal_windows.ndim != 2 or normal_windows.shape[0] < 2:
        raise ValueError("need at least two normal windows of equal length")
    data = normal_windows.astype(np.float64)
    if pooled:
        mean = np.full(data.shape[1], data.mean(), dtype=np.float32)
        std = np.full(data.shape[1], max(float(data.std()), 1e-6), dtype=np.float32)
    else:
        mean = data.mean(axis=0).astype(np.float32)
        std = np.maximum(data.std(axis=0), 1e-6).astype(np.float32)
    scores = (((data - mean) / std) ** 2).mean(axis=1)
    threshold = float(np.percentile(scores, 99.5)) * 1.5
    return AnomalyParams(
        mean=mean, std=std, threshold=threshold, sharpness=4.0 / max(threshold, 1e-6)
    )


def synthetic_normal_windows(window: int, count: int = 512, seed: int = 0) -> NDArray[np.float32]:
    """Normal vibration as the simulated PLC produces it (0.001 g counts, sd 40)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0.0, 0.04, size=(count, window))).astype(np.float32)


def build_anomaly_onnx(params: AnomalyParams, *, model_version: str = "1") -> bytes:
    """The ONNX graph of the model: window[N, W] -> score[N], anomaly[N]."""
    width = int(params.mean.shape[0])
    inits = [
        numpy_helper.from_array(params.mean.reshape(1, width), "mean"),
        numpy_helper.from_array(params.std.reshape(1, width), "std"),
        numpy_helper.from_array(np.array([params.threshold], dtype=np.float32), "threshold"),
        numpy_helper.from_array(np.array([params.sharpness], dtype=np.float32), "sharpness"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT, "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["z2"]),
        helper.make_node("ReduceMean", ["z2", "axis"], [SCORE], keepdims=0),
        helper.make_node("Sub", [SCORE, "threshold"], ["margin"]),
        helper.make_node("Mul", ["margin", "sharpness"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], [PROBABILITY]),
    ]
    graph = helper.make_graph(
        nodes,
        "edgefabric-anomaly",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", width])],
        [
            helper.make_tensor_value_info(SCORE, TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info(PROBABILITY, TensorProto.FLOAT, ["batch"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18)],
        producer_name="edgefabric",
        model_version=int(model_version) if model_version.isdigit() else 0,
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
