"""Helpers for the learning tests: hard-example frames and a weak deployed edge model."""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import NDArray

from aggregator.incremental import Dataset
from aggregator.strategies import Weights
from aggregator.trainer import TrainConfig, init_weights, local_train
from schemas.frames import pack
from schemas.hard_examples import HardExample
from schemas.inference import Prediction
from schemas.tensor import encode_tensor
from tests.aggregator.rig import digits


def hard_example_frame(x: NDArray[np.float32], *, edge_label: int = 0) -> bytes:
    """A frame as the edge pipeline sends it: header + the input tensor."""
    body = encode_tensor(np.asarray(x, dtype=np.float32).reshape(1, -1))
    header = HardExample(
        pipeline="digits",
        model="digits-edge",
        model_version="1",
        reason="cross_entropy",
        edge_result=Prediction(label=edge_label, confidence=0.4),
        dedupe_key=hashlib.sha256(body).hexdigest(),
    )
    return pack(header, body)


def weak_model() -> tuple[Weights, Dataset, Dataset]:
    """An edge model trained on 40 samples only, its base data, and the base hold-out."""
    split = digits()
    base = Dataset(split.x_train[:40], split.y_train[:40])
    weights = local_train(init_weights(0, 0), base.x, base.y, TrainConfig(epochs=5, lr=0.1))
    return weights, base, Dataset(split.x_val, split.y_val)


def pool() -> Dataset:
    """Samples the edge never trained on: where hard examples come from."""
    split = digits()
    return Dataset(split.x_train[40:], split.y_train[40:])
