"""Cloud learning: federated aggregation that never hangs, hard-example labelling, retraining.

See docs/learning.md. Federated: `JobConfig` -> `Coordinator` over a `CloudTransport`
(`NatsCloudTransport` in production) with `EdgeTrainer`s at the edges. Incremental:
`HardExampleStore` + `Labeller` + `IncrementalLearner`, run together by `LearningService`.

Names are imported on first use (PEP 562): `edgefabric.config` reads `LearningSettings` on
every edge, which must not pay for the trainer, ONNX export and NATS clients it never runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aggregator.coordinator import Coordinator
    from aggregator.edge_trainer import Behaviour, EdgeTrainer
    from aggregator.errors import AggregationError, JobFailed, LabelNotFound, LearningError
    from aggregator.incremental import Dataset, IncrementalLearner, ModelSink
    from aggregator.job import JobConfig, RoundRecord
    from aggregator.labelling import Labeller, OnnxClassifier, Outcome
    from aggregator.service import DownlinkModelSink, LearningService, build_learning_service
    from aggregator.settings import LearningSettings
    from aggregator.store import HardExampleStore, HistoryEntry, StoredExample
    from aggregator.strategies import (
        STRATEGIES,
        ClientUpdate,
        FedAdam,
        FedAvg,
        FedMedian,
        FedProx,
        FedTrimmedAvg,
        Krum,
        Strategy,
        make_strategy,
    )
    from aggregator.transport import CloudTransport, EdgeLink, MqttEdgeLink, NatsCloudTransport
    from aggregator.triggers import DeployGate, Trigger

_WHERE = {
    "Coordinator": "aggregator.coordinator",
    "Behaviour": "aggregator.edge_trainer",
    "EdgeTrainer": "aggregator.edge_trainer",
    "AggregationError": "aggregator.errors",
    "JobFailed": "aggregator.errors",
    "LabelNotFound": "aggregator.errors",
    "LearningError": "aggregator.errors",
    "Dataset": "aggregator.incremental",
    "IncrementalLearner": "aggregator.incremental",
    "ModelSink": "aggregator.incremental",
    "DeployGate": "aggregator.triggers",
    "Trigger": "aggregator.triggers",
    "JobConfig": "aggregator.job",
    "RoundRecord": "aggregator.job",
    "Labeller": "aggregator.labelling",
    "OnnxClassifier": "aggregator.labelling",
    "Outcome": "aggregator.labelling",
    "DownlinkModelSink": "aggregator.service",
    "LearningService": "aggregator.service",
    "build_learning_service": "aggregator.service",
    "LearningSettings": "aggregator.settings",
    "HardExampleStore": "aggregator.store",
    "HistoryEntry": "aggregator.store",
    "StoredExample": "aggregator.store",
    "STRATEGIES": "aggregator.strategies",
    "ClientUpdate": "aggregator.strategies",
    "FedAdam": "aggregator.strategies",
    "FedAvg": "aggregator.strategies",
    "FedMedian": "aggregator.strategies",
    "FedProx": "aggregator.strategies",
    "FedTrimmedAvg": "aggregator.strategies",
    "Krum": "aggregator.strategies",
    "Strategy": "aggregator.strategies",
    "make_strategy": "aggregator.strategies",
    "CloudTransport": "aggregator.transport",
    "EdgeLink": "aggregator.transport",
    "MqttEdgeLink": "aggregator.transport",
    "NatsCloudTransport": "aggregator.transport",
}
__all__ = [
    "STRATEGIES",
    "AggregationError",
    "Behaviour",
    "ClientUpdate",
    "CloudTransport",
    "Coordinator",
    "Dataset",
    "DeployGate",
    "DownlinkModelSink",
    "EdgeLink",
    "EdgeTrainer",
    "FedAdam",
    "FedAvg",
    "FedMedian",
    "FedProx",
    "FedTrimmedAvg",
    "HardExampleStore",
    "HistoryEntry",
    "IncrementalLearner",
    "JobConfig",
    "JobFailed",
    "Krum",
    "LabelNotFound",
    "Labeller",
    "LearningError",
    "LearningService",
    "LearningSettings",
    "ModelSink",
    "MqttEdgeLink",
    "NatsCloudTransport",
    "OnnxClassifier",
    "Outcome",
    "RoundRecord",
    "StoredExample",
    "Strategy",
    "Trigger",
    "build_learning_service",
    "make_strategy",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines `name` on first access."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'aggregator' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
