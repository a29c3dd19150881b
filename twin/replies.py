"""Where a request's answer goes, on MQTT v5 and on 3.1.1 alike.

A v5 client sets the response-topic and correlation-data properties; a 3.1.1 client (amqtt
speaks nothing else) puts `reply_to` and `correlation_id` in the request body. The body wins
when both are present, because it survives any broker; the correlation data, when present, is
echoed back as a v5 property so v5 client libraries can match the answer natively.
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.mqtt import MqttClient
from bus.subscription import InboundMessage
from schemas.base import check_name
from schemas.errors import InvalidName
from schemas.topics import reply_topic_refusal


@dataclass(frozen=True, slots=True)
class ReplyRoute:
    """The reply topic and correlation of one request (topic None: nobody asked for a reply).

    `refusal` says why a reply topic the requester named may not be answered on
    (`schemas.topics.reply_topic_refusal`); such a request is dead-lettered, not served.
    """

    topic: str | None
    correlation_id: str | None
    correlation_data: bytes | None
    refusal: str | None = None

    @classmethod
    def of(
        cls, message: InboundMessage, reply_to: str | None, correlation_id: str | None
    ) -> ReplyRoute:
        """Combine the body's reply fields with the message's v5 properties."""
        data = message.correlation_data
        if correlation_id is None and data is not None:
            correlation_id = data.decode("utf-8", "replace")
        topic = reply_to or message.response_topic
        refusal = reply_topic_refusal(topic) if topic is not None else None
        return cls(None if refusal else topic, correlation_id, data, refusal)

    async def send(self, bus: MqttClient, payload: bytes) -> None:
        """Publish the answer (no-op when the request had no reply topic)."""
        if self.topic is None:
            return
        data = self.correlation_data
        if data is None and self.correlation_id is not None:
            data = self.correlation_id.encode()
        await bus.publish(self.topic, payload, correlation_data=data)


def device_in_topic(topic: str, level: int = 2) -> str | None:
    """The device name at `level` of an ``ef/twin/{device}/...`` topic, or None if invalid."""
    parts = topic.split("/")
    if len(parts) <= level:
        return None
    try:
        return check_name(parts[level])
    except InvalidName:
        return None
