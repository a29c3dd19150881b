"""Five simulated edges with non-IID digits, talking to a real hub nats-server."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregator.coordinator import Coordinator
from aggregator.edge_trainer import Behaviour, EdgeTrainer
from aggregator.job import JobConfig, RoundRecord
from aggregator.strategies import Weights
from aggregator.trainer import accuracy, dirichlet_split, init_weights
from aggregator.transport import NatsCloudTransport, NatsEdgeLink
from bus.lifecycle import ServiceTasks
from pipelines.digits import DigitsSplit, load_digits_split
from schemas.signing import TrustedKeys

EDGES = [f"edge-{i}" for i in range(1, 6)]


@functools.cache
def digits() -> DigitsSplit:
    """The bundled digits, split once per test session."""
    return load_digits_split()


@contextlib.asynccontextmanager
async def edges(
    hub_url: str,
    job: str,
    behaviours: dict[str, Behaviour] | None = None,
    *,
    alpha: float = 0.5,
    trusted: TrustedKeys | None = None,
) -> AsyncIterator[list[EdgeTrainer]]:
    """Five edges on a Dirichlet(`alpha`) label-skewed split of the training digits.

    With `trusted`, every edge trains only on globals signed by one of those keys.
    """
    split = digits()
    parts = dirichlet_split(split.y_train, len(EDGES), alpha=alpha, seed=0)
    async with contextlib.AsyncExitStack() as stack:
        trainers = []
        for i, (edge, idx) in enumerate(zip(EDGES, parts, strict=True)):
            link = await stack.enter_async_context(NatsEdgeLink(hub_url, edge=edge, job=job))
            behaviour = (behaviours or {}).get(edge, Behaviour.HONEST)
            trainers.append(
                EdgeTrainer(
                    edge=edge,
                    link=link,
                    x=split.x_train[idx],
                    y=split.y_train[idx],
                    behaviour=behaviour,
                    seed=i,
                    trusted=trusted,
                )
            )
        async with ServiceTasks("test-edges") as tasks:
            for trainer in trainers:
                tasks.spawn(trainer.run(), trainer.edge)
            yield trainers


async def run_job(
    hub_url: str,
    config: JobConfig,
    behaviours: dict[str, Behaviour] | None = None,
    *,
    alpha: float = 0.5,
    signing_key: Ed25519PrivateKey | None = None,
    trusted: TrustedKeys | None = None,
) -> tuple[list[RoundRecord], list[EdgeTrainer], Coordinator]:
    """Run `config` to its end with the five edges and the coordinator over `hub_url`.

    `signing_key` signs the coordinator's globals; `trusted` is what the edges accept.
    """
    split = digits()

    def evaluate(weights: Weights) -> float:
        return accuracy(weights, split.x_test, split.y_test)

    async with (
        edges(hub_url, config.job, behaviours, alpha=alpha, trusted=trusted) as trainers,
        NatsCloudTransport(hub_url, config.job) as transport,
        Coordinator(
            config,
            transport,
            initial=init_weights(config.hidden, 0),
            evaluate=evaluate,
            signing_key=signing_key,
        ) as coord,
    ):
        records = await coord.run()
        return records, trainers, coord
