"""Cloud learning: federated aggregation that never hangs, hard-example labelling, retraining.

See docs/learning.md. Federated: `JobConfig` -> `Coordinator` over a `CloudTransport`
(`NatsCloudTransport` in production) with `EdgeTrainer`s at the edges. Incremental:
`HardExampleStore` + `Labeller` + `IncrementalLearner`, run together by `LearningService`.
"""

from aggregator.coordinator import Coordinator
from aggregator.edge_trainer import Behaviour, EdgeTrainer
from aggregator.errors import AggregationError, JobFailed, LabelNotFound, LearningError
from aggregator.incremental import Dataset, DeployGate, IncrementalLearner, ModelSink, Trigger
from aggregator.job import JobConfig, RoundRecord
from aggregator.labelling import Labeller, OnnxClassifier, Outcome
from aggregator.service import DownlinkModelSink, LearningService
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
    "ModelSink",
    "MqttEdgeLink",
    "NatsCloudTransport",
    "OnnxClassifier",
    "Outcome",
    "RoundRecord",
    "StoredExample",
    "Strategy",
    "Trigger",
    "make_strategy",
]
