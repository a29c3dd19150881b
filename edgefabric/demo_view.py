"""What the demo watches and shows: counts from the edge bus and from the cloud."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import TextIO

from bus.mqtt import MqttClient
from bus.subscription import Overflow
from edgefabric.cloud import Cloud, ResultsSink
from edgefabric.edge import Edge
from schemas import topics


@dataclass
class DemoCounts:
    """What the live view shows and `--summary-json` writes (see `summary`)."""

    readings: int = 0
    results: int = 0
    anomalies: int = 0
    forwarded_to_cloud: int = 0
    received_in_cloud: int = 0
    results_ids_edge: set[str] = field(default_factory=set)
    results_ids_cloud: set[str] = field(default_factory=set)
    cloud_duplicates: int = 0
    link: str = "up"
    queued: int = 0
    last: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    acts: dict[str, dict[str, object]] = field(default_factory=dict)
    cloud_received: asyncio.Event = field(default_factory=asyncio.Event)

    def event(self, text: str, out: TextIO) -> None:
        """Record and print one line of the story the demo tells."""
        self.events.append(text)
        out.write(f"  >> {text}\n")
        out.flush()

    def summary(self) -> dict[str, object]:
        """The final figures: counts, and what each act measured."""
        lost = self.results_ids_edge - self.results_ids_cloud
        return {
            "readings": self.readings,
            "results": self.results,
            "anomalies": self.anomalies,
            "forwarded_to_cloud": self.forwarded_to_cloud,
            "received_in_cloud": self.received_in_cloud,
            "results_not_in_cloud": len(lost),
            "cloud_duplicates": self.cloud_duplicates,
            "acts": self.acts,
        }


async def watch_bus(bus: MqttClient, counts: DemoCounts) -> None:
    """Count readings and results on the edge's broker, and keep the latest values."""
    async with bus.subscribe(
        f"{topics.ROOT}/#", maxsize=5000, overflow=Overflow.DROP_OLDEST
    ) as sub:
        async for message in sub:
            kind = message.topic.split("/", 2)[1]
            if kind == "readings":
                counts.readings += 1
                name = "/".join(message.topic.split("/")[2:])
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    counts.last[name] = f"{float(json.loads(message.payload)['value']):.2f}"
            elif kind == "results":
                counts.results += 1
                with contextlib.suppress(ValueError, KeyError):
                    counts.results_ids_edge.add(json.loads(message.payload)["message_id"])
            elif message.topic == topics.bridge_status():
                with contextlib.suppress(ValueError, KeyError):
                    status = json.loads(message.payload)
                    counts.link = str(status["link"])
                    counts.queued = sum(c["queued"] for c in status["classes"].values())


async def watch_cloud(cloud: Cloud, counts: DemoCounts) -> None:
    """Consume the uplink stream in the cloud, as a cloud service would."""
    sink = ResultsSink()
    async with cloud.consumer("demo-dashboard") as consumer:
        async for message in consumer.messages():
            result = sink.handle(message)
            if result is None:
                continue
            if result.message_id in counts.results_ids_cloud:
                counts.cloud_duplicates += 1
            counts.results_ids_cloud.add(result.message_id)
            counts.received_in_cloud = len(counts.results_ids_cloud)
            counts.cloud_received.set()
            if result.label == "anomaly":
                counts.anomalies += 1


async def live_view(edge: Edge, counts: DemoCounts, out: TextIO, started: float) -> None:
    """Print one status line a second."""
    while True:
        await asyncio.sleep(1.0)
        counts.forwarded_to_cloud = edge.bridge.forwarded if edge.bridge else 0
        values = " ".join(f"{k}={v}" for k, v in sorted(counts.last.items()))
        out.write(
            f"[{time.monotonic() - started:5.1f}s] readings {counts.readings:6d} | "
            f"results {counts.results:5d} | link {counts.link:4} queued {counts.queued:4d} | "
            f"forwarded {counts.forwarded_to_cloud:5d} | cloud got {counts.received_in_cloud:5d}"
            f" | {values}\n"
        )
        out.flush()
