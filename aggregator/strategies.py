"""Aggregation strategies with Flower's formulas and defaults, in plain numpy.

Every strategy takes the current global weights and the round's updates (each a list of
arrays, one per layer, plus the number of local examples) and returns the new global weights.
Arithmetic is done in float64 and the result returned as float32.

Formulas (Flower 1.x, ``flwr.server.strategy``):

* FedAvg:  w = sum(n_k w_k) / sum(n_k).
* FedProx: FedAvg on the server; the client adds mu/2 ||w - w_t||^2 (see `trainer`).
* FedAdam: pseudo-gradient d = FedAvg(w_k) - w_t; m = b1 m + (1-b1) d; v = b2 v + (1-b2) d^2;
  w = w_t + eta_norm m / (sqrt(v) + tau), eta_norm = eta sqrt(1-b2^(t+1)) / (1-b1^(t+1)).
  Defaults eta=0.1, eta_l=0.1 (client rate, sent in the fit config), b1=0.9, b2=0.99, tau=1e-9.
* FedMedian: coordinate-wise median (unweighted).
* FedTrimmedAvg: per coordinate, sort, cut int(beta n) from each tail, mean (beta=0.2).
* Krum: score_i = sum of squared distances to its n-f-2 nearest others (at least 1); the
  lowest score wins. MultiKrum (`keep` = m > 0) averages the m best with FedAvg.

Optional update-norm clipping (`clip_norm`) scales each client's update w_k - w_t down to the
norm bound before any of the above: a cheap limit on what one client can move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import AggregationError

Weights = list[NDArray[np.float32]]
_F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ClientUpdate:
    """One client's answer in a round: its trained weights and how many examples it saw."""

    weights: Weights
    num_examples: int
    client: str = ""


class Strategy(Protocol):
    """What the coordinator asks of a strategy."""

    name: str

    def aggregate(
        self, current: Weights, updates: list[ClientUpdate], round_number: int
    ) -> Weights:
        """The next global weights from `current` and the round's updates."""
        ...


def _check(name: str, current: Weights, updates: list[ClientUpdate]) -> None:
    if not updates:
        raise AggregationError(name, "no updates to aggregate")
    shapes = [w.shape for w in current]
    for update in updates:
        if [w.shape for w in update.weights] != shapes:
            raise AggregationError(name, f"update from {update.client or '?'} has wrong shapes")
        if update.num_examples <= 0:
            raise AggregationError(name, f"update from {update.client or '?'} has no examples")


def _prepared(
    name: str, current: Weights, updates: list[ClientUpdate], clip_norm: float | None
) -> list[ClientUpdate]:
    """Checked updates, norm-clipped when the strategy clips: every strategy starts here."""
    _check(name, current, updates)
    return updates if clip_norm is None else clip_updates(current, updates, clip_norm)


def _f32(layers: list[_F64]) -> Weights:
    return [layer.astype(np.float32) for layer in layers]


def clip_updates(
    current: Weights, updates: list[ClientUpdate], clip_norm: float
) -> list[ClientUpdate]:
    """Scale every update's delta ``w_k - w_t`` to an L2 norm of at most `clip_norm`."""
    clipped = []
    for update in updates:
        deltas = [w.astype(np.float64) - c for w, c in zip(update.weights, current, strict=True)]
        norm = float(np.sqrt(sum(float(np.sum(d * d)) for d in deltas)))
        scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
        weights = _f32([c + scale * d for c, d in zip(current, deltas, strict=True)])
        clipped.append(ClientUpdate(weights, update.num_examples, update.client))
    return clipped


def weighted_average(updates: list[ClientUpdate]) -> list[_F64]:
    """Flower's ``aggregate``: sum(n_k w_k) / sum(n_k), per layer."""
    total = float(sum(u.num_examples for u in updates))
    layers = len(updates[0].weights)
    return [
        sum((u.num_examples / total) * u.weights[i].astype(np.float64) for u in updates)  # type: ignore[misc]
        for i in range(layers)
    ]


def _stack(updates: list[ClientUpdate], layer: int) -> _F64:
    return np.stack([u.weights[layer].astype(np.float64) for u in updates])


@dataclass
class FedAvg:
    """Weighted mean by example count (also the server side of FedProx)."""

    clip_norm: float | None = None
    name: str = "fedavg"

    def aggregate(
        self, current: Weights, updates: list[ClientUpdate], round_number: int
    ) -> Weights:
        """FedAvg of the (optionally clipped) updates."""
        updates = _prepared(self.name, current, updates, self.clip_norm)
        return _f32(weighted_average(updates))


@dataclass
class FedProx(FedAvg):
    """FedAvg on the server; `proximal_mu` goes to the clients in the fit config."""

    proximal_mu: float = 0.1
    name: str = "fedprox"


@dataclass
class FedAdam:
    """Server-side Adam on the FedAvg pseudo-gradient (Reddi et al., as in Flower)."""

    eta: float = 1e-1
    eta_l: float = 1e-1
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-9
    clip_norm: float | None = None
    name: str = "fedadam"
    m_t: list[_F64] = field(default_factory=list)
    v_t: list[_F64] = field(default_factory=list)

    def aggregate(
        self, current: Weights, updates: list[ClientUpdate], round_number: int
    ) -> Weights:
        """One Adam step from `current` along FedAvg(updates) - current."""
        updates = _prepared(self.name, current, updates, self.clip_norm)
        base = [c.astype(np.float64) for c in current]
        delta = [a - c for a, c in zip(weighted_average(updates), base, strict=True)]
        if not self.m_t:
            self.m_t = [np.zeros_like(d) for d in delta]
            self.v_t = [np.zeros_like(d) for d in delta]
        self.m_t = [
            self.beta_1 * m + (1 - self.beta_1) * d for m, d in zip(self.m_t, delta, strict=True)
        ]
        self.v_t = [
            self.beta_2 * v + (1 - self.beta_2) * d * d
            for v, d in zip(self.v_t, delta, strict=True)
        ]
        eta_norm = (
            self.eta
            * np.sqrt(1 - np.power(self.beta_2, round_number + 1.0))
            / (1 - np.power(self.beta_1, round_number + 1.0))
        )
        return _f32(
            [
                c + eta_norm * m / (np.sqrt(v) + self.tau)
                for c, m, v in zip(base, self.m_t, self.v_t, strict=True)
            ]
        )


@dataclass
class FedMedian:
    """Coordinate-wise median: one client can move no coordinate past the honest ones."""

    clip_norm: float | None = None
    name: str = "fedmedian"

    def aggregate(
        self, current: Weights, updates: list[ClientUpdate], round_number: int
    ) -> Weights:
        """Per-coordinate median of the updates."""
        updates = _prepared(self.name, current, updates, self.clip_norm)
        return _f32([np.median(_stack(updates, i), axis=0) for i in range(len(current))])


@dataclass
class FedTrimmedAvg:
    """Per-coordinate mean after cutting `beta` of the values from each tail."""

    beta: float = 0.2
    clip_norm: float | None = None
    name: str = "fedtrimmedavg"

    def aggregate(
        self, current: Weights, updates: list[ClientUpdate], round_number: int
    ) -> Weights:
        """Trimmed mean as scipy's ``trim_mean`` (what Flower's ``_trim_mean`` reimplements)."""
        updates = _prepared(self.name, current, updates, self.clip_norm)
        n = len(updates)
        cut = int(self.beta * n)
        if cut >= n - cut:
            raise AggregationError(self.name, f"beta={self.beta} trims all {n} updates")
        out = []
        for i in range(len(current)):
            ordered = np.sort(_stack(updates, i), axis=0)
            out.append(ordered[cut : n - cut].mean(axis=0))
        return _f32(out)


def krum_scores(updates: list[ClientUpdate], num_malicious: int) -> _F64:
    """Krum score of each update: sum of squared distances to its n-f-2 nearest others."""
    flat = np.stack(
        [np.concatenate([w.astype(np.float64).ravel() for w in u.weights]) for u in updates]
    )
    sq = np.sum(flat * flat, axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    closest = max(1, len(updates) - int(num_malicious) - 2)
    scores = np.empty(len(updates))
    for i in range(len(updates)):
        others = np.delete(dist[i], i)
        scores[i] = np.sort(others)[:closest].sum()
    return scores


@dataclass
class Krum:
    """Krum (`keep` = 0) or MultiKrum (`keep` = m): pick the update(s) closest to the rest."""

    num_malicious: int = 0
    keep: int = 0
    clip_norm: float | None = None
    name: str = "krum"

    def aggregate(
        self, current: Weights, updates: list[ClientUpdate], round_number: int
    ) -> Weights:
        """The lowest-scoring update, or the FedAvg of the `keep` lowest."""
        updates = _prepared(self.name, current, updates, self.clip_norm)
        order = np.argsort(krum_scores(updates, self.num_malicious), kind="stable")
        if self.keep > 0:
            best = order[: int(self.keep)]
            return _f32(weighted_average([updates[int(i)] for i in best]))
        return _f32([w.astype(np.float64) for w in updates[int(order[0])].weights])


STRATEGIES: dict[
    str, type[FedAvg] | type[FedAdam] | type[FedMedian] | type[FedTrimmedAvg] | type[Krum]
] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
}


def make_strategy(name: str, **options: float) -> Strategy:
    """Build a strategy by name with its options (Flower's defaults otherwise).

    Raises:
        AggregationError: unknown strategy name or option.

    """
    cls = STRATEGIES.get(name)
    if cls is None:
        raise AggregationError(name, f"unknown strategy; known: {', '.join(STRATEGIES)}")
    try:
        return cls(**options)  # type: ignore[arg-type]
    except TypeError as exc:
        raise AggregationError(name, str(exc)) from exc
