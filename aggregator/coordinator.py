"""The federated coordinator: rounds that always end, on time, with a recorded reason.

Flower waits without bound for its minimum number of clients and Sedna's FL waits for every
client forever; here every wait has a deadline. A round ends as soon as every sampled edge has
answered, or at `round_timeout_s` with whoever did. Updates for another round or another
run of the job (late: their `instruction` is not this round's global model), from unsampled
edges, undecodable or of the wrong shape are refused and recorded, never aggregated; only
the sampled edges are waited for. Decoding happens in the reader task; aggregation and
evaluation run in a thread.

Updates come from edges, possibly compromised ones: every refused or late update is also
reported to `dead_letters` (in the cloud, ``ef.cloud.dead-letter.{service}``) with its reason.
A hostile frame can only cost its own sender its place in the round (its first answer counts),
never crash the coordinator or spoil the aggregate of the others.

Globals go the other way, to every edge: given a `signing_key`, the coordinator signs each one
(`schemas.federated.sign_fit`: job, round, settings, participants, the weights' SHA-256...) so
edges that trust its public key train only on what this coordinator sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

from aggregator.errors import JobFailed
from aggregator.job import JobConfig, RoundRecord
from aggregator.strategies import ClientUpdate, Strategy, Weights, make_strategy
from aggregator.transport import CloudTransport
from bus.lifecycle import ServiceTasks
from cloud_bridge.dead_letters import DeadLetterSink
from schemas import topics
from schemas.errors import EdgefabricError, InvalidName, SchemaError
from schemas.federated import FitInstruction, FitUpdate, decode_update, encode_fit
from schemas.topics import TrafficClass

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)
Evaluate = Callable[[Weights], float]
_Inbound = tuple[str, FitUpdate | None, Weights | None, str, bytes]


class Coordinator:
    """Runs one federated job over a `CloudTransport`.

    Args:
        config: the job.
        transport: entered by the caller; the coordinator only uses it.
        initial: the starting global weights.
        evaluate: centralised evaluation (held-out accuracy) after each round, or None.
        dead_letters: told about every refused or late update (e.g. `CloudDeadLetters`).
        signing_key: signs every global frame sent (`schemas.federated`); None sends them
            unsigned, which edges with trusted keys refuse.

    """

    def __init__(
        self,
        config: JobConfig,
        transport: CloudTransport,
        *,
        initial: Weights,
        evaluate: Evaluate | None = None,
        strategy: Strategy | None = None,
        dead_letters: DeadLetterSink | None = None,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.config = config
        self.weights = initial
        self.records: list[RoundRecord] = []
        self._transport = transport
        self._evaluate = evaluate
        self._strategy = strategy or make_strategy(config.strategy, **config.strategy_options)
        self._inbox: asyncio.Queue[_Inbound] = asyncio.Queue(maxsize=256)
        self._tasks = ServiceTasks(f"aggregator[{config.job}]")
        self._rng = random.Random(config.seed)
        self._dead_letters = dead_letters
        self._signing_key = signing_key

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        self._tasks.spawn(self._read(), "updates")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._tasks.__aexit__(et, e, tb)

    async def _read(self) -> None:
        """Decode every arriving frame; the bounded inbox blocks the consumer when full."""
        async for edge, payload in self._transport.updates():
            try:
                header, weights = decode_update(payload)
            except SchemaError as exc:
                await self._inbox.put((edge, None, None, exc.reason, payload))
                continue
            await self._inbox.put((edge, header, weights, "", payload))

    async def _refuse(self, edge: str, payload: bytes, reason: str) -> None:
        """Report one refused or late update (a hostile frame must leave a trace)."""
        log.warning("job %s: update from %s refused: %s", self.config.job, edge, reason)
        if self._dead_letters is None:
            return
        try:
            subject = topics.uplink(edge, TrafficClass.CONTROL, "fl", self.config.job, "update")
        except InvalidName:
            subject = topics.fl_update_uplink_filter(self.config.job)
        await self._dead_letters(subject, payload, f"job {self.config.job}: {reason}")

    def _sample(self) -> list[str]:
        edges = list(self.config.edges)
        count = max(self.config.min_fit_clients, round(self.config.fraction_fit * len(edges)))
        return sorted(self._rng.sample(edges, min(count, len(edges))))

    async def run(self) -> list[RoundRecord]:
        """Run every round (or until the target accuracy); the final model is sent as final.

        Raises:
            JobFailed: fewer edges than `min_available_clients`, or `max_failed_rounds`
                failed rounds in a row.

        """
        cfg = self.config
        if len(cfg.edges) < cfg.min_available_clients:
            raise JobFailed(cfg.job, 0, f"{len(cfg.edges)} edges < {cfg.min_available_clients}")
        failed_in_a_row = 0
        for number in range(1, cfg.rounds + 1):
            record = await self.run_round(number)
            self.records.append(record)
            log.info("job %s round %d: %s", cfg.job, number, record.reason)
            failed_in_a_row = failed_in_a_row + 1 if record.status == "failed" else 0
            if failed_in_a_row >= cfg.max_failed_rounds:
                raise JobFailed(cfg.job, number, f"{failed_in_a_row} failed rounds in a row")
            target = cfg.target_accuracy
            if target is not None and record.accuracy is not None and record.accuracy >= target:
                break
        await self._send(len(self.records) + 1, [], final=True)
        return self.records

    async def _send(self, number: int, sampled: list[str], *, final: bool = False) -> str:
        cfg = self.config
        train = cfg.train
        if cfg.strategy == "fedprox" and not train.proximal_mu:
            mu = cfg.strategy_options.get("proximal_mu", 0.1)
            train = train.model_copy(update={"proximal_mu": mu})
        instruction = FitInstruction(
            job=cfg.job,
            round=number,
            model=cfg.model,
            train=train,
            participants=sampled,
            deadline=time.time() + cfg.round_timeout_s,
            final=final,
        )
        frame = await asyncio.to_thread(
            encode_fit, instruction, self.weights, signing_key=self._signing_key
        )
        async with asyncio.timeout(cfg.round_timeout_s):
            await self._transport.send_global(frame)
        return instruction.message_id

    async def run_round(self, number: int) -> RoundRecord:
        """One round: send, collect until all answered or the timeout, aggregate if enough."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        sampled = self._sample()
        got: dict[str, ClientUpdate] = {}
        rejected: dict[str, str] = {}
        late, sent = 0, ""
        try:
            sent = await self._send(number, sampled)
        except (TimeoutError, OSError, EdgefabricError) as exc:
            rejected["<cloud>"] = f"global model not sent: {exc}"
        deadline = started + self.config.round_timeout_s
        waiting = set(sampled)
        while waiting and sent:
            try:
                async with asyncio.timeout_at(deadline):
                    edge, header, weights, problem, payload = await self._inbox.get()
            except TimeoutError:
                break
            if header is not None and (header.round != number or header.instruction != sent):
                late += 1  # an earlier round's, or replayed from an earlier run of the job
                await self._refuse(edge, payload, f"late: round {header.round}, not {number}'s")
                continue
            waiting.discard(edge)
            problem = problem or self._problem(edge, header, weights, sampled)
            if problem:
                rejected[edge] = problem
                await self._refuse(edge, payload, problem)
            elif header is not None and weights is not None and edge not in got:
                got[edge] = ClientUpdate(weights, header.num_examples, edge)
        return await self._close(
            number, started=started, sampled=sampled, got=got, rejected=rejected, late=late
        )

    def _problem(
        self, edge: str, header: FitUpdate | None, weights: Weights | None, sampled: list[str]
    ) -> str:
        if header is None or weights is None:
            return "undecodable"
        if header.job != self.config.job:
            return f"for job {header.job}"
        if edge not in sampled or header.edge != edge:
            return "not sampled for this round"
        if [w.shape for w in weights] != [w.shape for w in self.weights]:
            return "weights of the wrong shape"
        return ""

    async def _close(
        self,
        number: int,
        *,
        started: float,
        sampled: list[str],
        got: dict[str, ClientUpdate],
        rejected: dict[str, str],
        late: int,
    ) -> RoundRecord:
        cfg = self.config
        missing = [e for e in sampled if e not in got and e not in rejected]
        failures = len(missing) + sum(1 for e in rejected if e in sampled or e == "<cloud>")
        how = "all answered" if not failures else f"{len(got)}/{len(sampled)} answered"
        if missing:
            how += f", timeout after {cfg.round_timeout_s:g} s (missing: {', '.join(missing)})"
        if rejected:
            how += f", rejected: {', '.join(sorted(rejected))}"
        status = "completed"
        if len(got) < cfg.min_fit_clients:
            status, how = "failed", f"{how}; fewer than min_fit_clients={cfg.min_fit_clients}"
        elif failures and not cfg.accept_failures:
            status, how = "failed", f"{how}; accept_failures is off"
        if status == "completed":
            updates = [got[e] for e in sorted(got)]
            self.weights = await asyncio.to_thread(
                self._strategy.aggregate, self.weights, updates, number
            )
        accuracy = None
        if self._evaluate is not None:
            accuracy = await asyncio.to_thread(self._evaluate, self.weights)
        return RoundRecord(
            round=number,
            status=status,
            reason=how,
            sampled=sampled,
            answered=sorted(got),
            missing=missing,
            rejected=rejected,
            late=late,
            accuracy=accuracy,
            duration_s=asyncio.get_running_loop().time() - started,
        )
