"""The chaos test's load: numbered results and hard examples at QoS 1, and twin desired sets.

A message counts as *acknowledged* when the broker PUBACKed it (`MqttClient.publish` returned);
a twin update when the twin answered `TwinSetResult(ok=True)`, which it sends only after the
update is durable in its SQLite file. Each acknowledgement is timestamped so the test can tell
which ones fell inside Mosquitto's autosave window before a broker SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

from bus.errors import BusError
from bus.mqtt import MqttClient
from schemas import topics
from twin.client import TwinClient

DEVICE = "chaos-dev"
PIPELINE = "chaos"


def hard_example_payload(n: int) -> bytes:
    """An opaque binary frame (not JSON: the bridge ids it by sha256 of topic and bytes)."""
    return b"\x00HE" + n.to_bytes(4, "big") + bytes(256)


def hard_example_number(payload: bytes) -> int:
    """Inverse of `hard_example_payload`."""
    assert payload[:3] == b"\x00HE", payload[:8]
    return int.from_bytes(payload[3:7], "big")


@dataclass
class Load:
    """What was sent and what was acknowledged, by number, with the time of each ack."""

    sent: set[int] = field(default_factory=set)
    acked: dict[int, float] = field(default_factory=dict)
    he_sent: set[int] = field(default_factory=set)
    he_acked: dict[int, float] = field(default_factory=dict)
    twin_sent: list[int] = field(default_factory=list)
    twin_acked: list[int] = field(default_factory=list)
    running: bool = True

    async def readings(self, broker_url: str, interval: float = 0.01) -> None:
        """Results numbered 0.. to `topics.result`, one at a time, until `running` is False."""
        async with MqttClient(broker_url, client_id="chaos-load", clean_session=False) as bus:
            n = 0
            while self.running:
                payload = json.dumps({"message_id": f"chaos{n:07d}", "n": n}).encode()
                self.sent.add(n)
                with contextlib.suppress(BusError):
                    await bus.publish(topics.result(PIPELINE, DEVICE), payload, timeout=2)
                    self.acked[n] = time.monotonic()
                if n % 5 == 0:
                    self.he_sent.add(n)
                    with contextlib.suppress(BusError):
                        await bus.publish(
                            topics.hard_examples(PIPELINE), hard_example_payload(n), timeout=2
                        )
                        self.he_acked[n] = time.monotonic()
                n += 1
                await asyncio.sleep(interval)

    async def twin_sets(self, broker_url: str, interval: float = 0.05) -> None:
        """Desired setpoint 0, 1, 2, ... on one device; remembers the ones the twin stored."""
        async with (
            MqttClient(broker_url, client_id="chaos-app") as bus,
            TwinClient(bus, name="chaos-app") as twin,
        ):
            k = 0
            while self.running:
                self.twin_sent.append(k)
                with contextlib.suppress(BusError):
                    result = await twin.set(DEVICE, {"setpoint": k}, timeout=1.5)
                    if result.ok:
                        self.twin_acked.append(k)
                k += 1
                await asyncio.sleep(interval)
