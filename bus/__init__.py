"""The local message fabric: the MQTT broker and client, and the NATS servers."""

from bus.broker import EmbeddedBroker
from bus.errors import BusError, InvalidBrokerUrl, NatsServerError, NotConnected, RequestTimeout
from bus.mqtt import ConnectionState, MqttClient
from bus.nats_server import CLOUD_DOMAIN, HubSpec, LeafSpec, NatsServer, find_nats_server
from bus.ports import free_port
from bus.requester import Requester
from bus.subscription import InboundMessage, Overflow, Subscription
from bus.url import BrokerAddress, parse_broker_url

__all__ = [
    "CLOUD_DOMAIN",
    "BrokerAddress",
    "BusError",
    "ConnectionState",
    "EmbeddedBroker",
    "HubSpec",
    "InboundMessage",
    "InvalidBrokerUrl",
    "LeafSpec",
    "MqttClient",
    "NatsServer",
    "NatsServerError",
    "NotConnected",
    "Overflow",
    "RequestTimeout",
    "Requester",
    "Subscription",
    "find_nats_server",
    "free_port",
    "parse_broker_url",
]
