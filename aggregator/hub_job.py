"""One federated job over the cloud hub, with the given edge trainers answering it.

The demo and the benchmark run the same composition: the trainers (simulated edges on the
hub, or a real edge behind its bridge) as tasks, the hub transport, and a coordinator that
reports refused updates on the job's cloud dead-letter subject.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregator.coordinator import Coordinator, Evaluate
from aggregator.edge_trainer import EdgeTrainer
from aggregator.job import JobConfig
from aggregator.strategies import Weights
from aggregator.transport import NatsCloudTransport
from bus.lifecycle import ServiceTasks


@contextlib.asynccontextmanager
async def hub_job(
    hub_url: str,
    config: JobConfig,
    trainers: Sequence[EdgeTrainer],
    *,
    initial: Weights,
    evaluate: Evaluate | None = None,
    signing_key: Ed25519PrivateKey | None = None,
) -> AsyncIterator[Coordinator]:
    """The job's coordinator, ready to `run`, with every trainer already answering."""
    async with (
        ServiceTasks(f"fl.{config.job}.edges") as tasks,
        NatsCloudTransport(hub_url, config.job) as transport,
    ):
        for trainer in trainers:
            tasks.spawn(trainer.run(), trainer.edge)
        async with Coordinator(
            config,
            transport,
            initial=initial,
            evaluate=evaluate,
            dead_letters=transport.dead_letters,
            signing_key=signing_key,
        ) as coordinator:
            yield coordinator
