"""The NATS leaf-node bridge between an edge and the cloud: store, forward, never lose."""

from cloud_bridge.bridge import CloudBridge
from cloud_bridge.cloud_consumer import CloudConsumer, UplinkMessage, ensure_cloud_stream
from cloud_bridge.dedupe import EdgeSequenceTracker
from cloud_bridge.downlink import CloudPublisher, EdgeDownlink
from cloud_bridge.errors import BridgeError, IntegrityError, LinkDown
from cloud_bridge.settings import BridgeSettings, ClassLimits, CloudStreamSettings

__all__ = [
    "BridgeError",
    "BridgeSettings",
    "ClassLimits",
    "CloudBridge",
    "CloudConsumer",
    "CloudPublisher",
    "CloudStreamSettings",
    "EdgeDownlink",
    "EdgeSequenceTracker",
    "IntegrityError",
    "LinkDown",
    "UplinkMessage",
    "ensure_cloud_stream",
]
