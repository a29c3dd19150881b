"""The NATS leaf-node bridge between an edge and the cloud: store, forward, never lose."""

from cloud_bridge.bridge import CloudBridge
from cloud_bridge.cloud_consumer import CloudConsumer, UplinkMessage, ensure_cloud_stream
from cloud_bridge.dedupe import EdgeSequenceTracker
from cloud_bridge.errors import BridgeError, LinkDown
from cloud_bridge.settings import BridgeSettings, CloudStreamSettings

__all__ = [
    "BridgeError",
    "BridgeSettings",
    "CloudBridge",
    "CloudConsumer",
    "CloudStreamSettings",
    "EdgeSequenceTracker",
    "LinkDown",
    "UplinkMessage",
    "ensure_cloud_stream",
]
