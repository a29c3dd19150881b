"""Federated rounds: rounds per minute by model size, and accuracy per round (PNG).

Run: ``python -m bench.aggregator [--rounds 5] [--sizes 100000,1000000,10000000]``

Part 1 — for MLPs of about 100 KB, 1 MB and 10 MB of float32 weights, five simulated edges
(one local epoch each) run rounds against the coordinator over a real hub nats-server: the
global model goes down through the downlink stream and five updates come up through the
uplink stream, chunked at 512 KiB. The baseline, measured in the same run, is the same round
in-process (five edges train in threads, FedAvg; no transport, no encoding): the ratio is
what the fabric costs.

Part 2 — 20 rounds on five Dirichlet(1.0) edges with softmax regression: FedAvg, then FedAvg,
FedMedian and MultiKrum with edge-2 sending scaled updates; accuracy per round is drawn into
``docs/fl_accuracy.png`` with a small PNG writer (zlib + struct, no matplotlib).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import struct
import tempfile
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from aggregator.coordinator import Coordinator
from aggregator.edge_trainer import Behaviour, EdgeTrainer
from aggregator.hub_job import hub_job
from aggregator.job import JobConfig
from aggregator.strategies import ClientUpdate, FedAvg, Weights
from aggregator.trainer import (
    TrainConfig,
    accuracy,
    dirichlet_split,
    hidden_for_bytes,
    init_weights,
    local_train,
    model_bytes,
)
from aggregator.transport import NatsEdgeLink
from bus.nats_server import HubSpec, NatsServer
from bus.ports import free_port
from pipelines.digits import DigitsSplit, load_digits_split
from schemas.federated import TrainSettings

EDGES = [f"edge-{i}" for i in range(1, 6)]
PNG_PATH = Path(__file__).resolve().parent.parent / "docs" / "fl_accuracy.png"


@contextlib.asynccontextmanager
async def hub() -> AsyncIterator[str]:
    """A hub nats-server on free loopback ports, in a temporary store."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = HubSpec(
            name="hub",
            port=free_port(),
            leafnode_port=free_port(),
            monitor_port=free_port(),
            store_dir=Path(tmp) / "js",
        )
        async with NatsServer(spec) as server:
            yield server.url


async def run_job(
    url: str,
    split: DigitsSplit,
    config: JobConfig,
    *,
    alpha: float,
    attacker: Behaviour = Behaviour.HONEST,
) -> tuple[Coordinator, float]:
    """Run `config` with five edges over `url`; the coordinator and the wall time of its rounds."""
    parts = dirichlet_split(split.y_train, len(EDGES), alpha=alpha, seed=0)
    async with contextlib.AsyncExitStack() as stack:
        trainers = []
        for i, (edge, idx) in enumerate(zip(EDGES, parts, strict=True)):
            link = await stack.enter_async_context(NatsEdgeLink(url, edge=edge, job=config.job))
            behaviour = attacker if edge == "edge-2" else Behaviour.HONEST
            trainers.append(
                EdgeTrainer(
                    edge=edge,
                    link=link,
                    x=split.x_train[idx],
                    y=split.y_train[idx],
                    behaviour=behaviour,
                    seed=i,
                )
            )
        coordinator = await stack.enter_async_context(
            hub_job(
                url,
                config,
                trainers,
                initial=init_weights(config.hidden, 0),
                evaluate=lambda w: accuracy(w, split.x_test, split.y_test),
            )
        )
        started = time.perf_counter()
        await coordinator.run()
        return coordinator, time.perf_counter() - started


async def in_process_round(
    weights: Weights, parts: list[NDArray[np.int64]], split: DigitsSplit
) -> None:
    """The baseline round: five local trainings in threads (as the edges run) and one FedAvg."""
    config = TrainConfig(epochs=1, lr=0.3, batch=16)
    trained = await asyncio.gather(
        *(
            asyncio.to_thread(local_train, weights, split.x_train[p], split.y_train[p], config)
            for p in parts
        )
    )
    updates = [ClientUpdate(w, len(p)) for w, p in zip(trained, parts, strict=True)]
    await asyncio.to_thread(FedAvg().aggregate, weights, updates, 1)


async def sizes_part(url: str, split: DigitsSplit, sizes: list[int], rounds: int) -> None:
    """Print rounds per minute over the hub against the in-process baseline."""
    parts = dirichlet_split(split.y_train, len(EDGES), alpha=1.0, seed=0)
    print(f"{'model':>10} {'hub r/min':>10} {'in-proc r/min':>14} {'ratio':>6}")
    for size in sizes:
        hidden = hidden_for_bytes(size)
        weights = init_weights(hidden, 0)
        config = JobConfig(
            job=f"size-{size}",
            edges=EDGES,
            rounds=rounds,
            hidden=hidden,
            round_timeout_s=300,
            train=TrainSettings(epochs=1),
        )
        _, wall = await run_job(url, split, config, alpha=1.0)
        hub_rpm = 60.0 * rounds / wall
        base = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            await in_process_round(weights, parts, split)
            base.append(time.perf_counter() - t0)
        base_rpm = 60.0 / float(np.median(base))
        label = f"{model_bytes(weights) / 1e6:.2f} MB"
        print(f"{label:>10} {hub_rpm:>10.1f} {base_rpm:>14.1f} {base_rpm / hub_rpm:>6.2f}")


async def accuracy_part(url: str, split: DigitsSplit, rounds: int) -> None:
    """Accuracy per round for four runs; printed and drawn into the PNG."""
    runs: tuple[tuple[str, dict[str, float], Behaviour], ...] = (
        ("fedavg", {}, Behaviour.HONEST),
        ("fedavg", {}, Behaviour.SCALED),
        ("fedmedian", {}, Behaviour.SCALED),
        ("krum", {"num_malicious": 1.0, "keep": 3.0}, Behaviour.SCALED),
    )
    series = []
    for strategy, options, attacker in runs:
        config = JobConfig(
            job=f"acc-{strategy}-{attacker}",
            edges=EDGES,
            rounds=rounds,
            strategy=strategy,
            strategy_options=options,
        )
        coordinator, _ = await run_job(url, split, config, alpha=1.0, attacker=attacker)
        accs = [r.accuracy or 0.0 for r in coordinator.records]
        series.append(accs)
        name = f"{strategy}{'' if attacker is Behaviour.HONEST else ' + scaled attacker'}"
        print(f"{name:<30} " + " ".join(f"{a:.2f}" for a in accs[::2]) + f"  final {accs[-1]:.3f}")
    central = local_train(
        init_weights(0, 0), split.x_train, split.y_train, TrainConfig(epochs=40, lr=0.3, batch=16)
    )
    target = accuracy(central, split.x_test, split.y_test)
    print(f"centralised accuracy {target:.3f}")
    write_plot(PNG_PATH, series, target)
    print(f"wrote {PNG_PATH}")


# ---- a tiny PNG plot: 3x5 bitmap font, lines, zlib + struct --------------------------------

_FONT = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001001001001",
    "8": "111101111101111",
    "9": "111101111001111",
    ".": "000000000000010",
    "-": "000000111000000",
    "+": "000010111010000",
    " ": "000000000000000",
    "A": "010101111101101",
    "C": "011100100100011",
    "D": "110101101101110",
    "E": "111100110100111",
    "F": "111100110100100",
    "G": "011100101101011",
    "I": "111010010010111",
    "K": "101101110101101",
    "L": "100100100100111",
    "M": "101111111101101",
    "N": "110101101101101",
    "O": "010101101101010",
    "P": "110101110100100",
    "R": "110101110101101",
    "S": "011100010001110",
    "T": "111010010010010",
    "U": "101101101101111",
    "V": "101101101101010",
    "Y": "101101010010010",
    "Z": "111001010100111",
    "H": "101101111101101",
    "B": "110101110101110",
}
_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14)]
_NAMES = ["FEDAVG", "FEDAVG + ATTACKER", "FEDMEDIAN + ATTACKER", "MULTIKRUM + ATTACKER"]
Canvas = NDArray[np.uint8]


def _text(img: Canvas, x: int, y: int, text: str, colour: tuple[int, int, int], s: int = 2) -> None:
    for i, ch in enumerate(text.upper()):
        bits = _FONT.get(ch, _FONT[" "])
        for k, bit in enumerate(bits):
            if bit == "1":
                r, c = divmod(k, 3)
                top, left = y + r * s, x + i * 4 * s + c * s
                img[top : top + s, left : left + s] = colour


def _line(
    img: Canvas, p: tuple[float, float], q: tuple[float, float], colour: tuple[int, int, int]
) -> None:
    steps = int(max(abs(q[0] - p[0]), abs(q[1] - p[1]))) + 1
    for t in np.linspace(0.0, 1.0, steps + 1):
        x, y = round(p[0] + t * (q[0] - p[0])), round(p[1] + t * (q[1] - p[1]))
        img[y - 1 : y + 1, x - 1 : x + 1] = colour


def write_png(path: Path, img: Canvas) -> None:
    """An 8-bit RGB PNG: signature, IHDR, one zlib IDAT (filter 0 per row), IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[row].tobytes() for row in range(h))
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def write_plot(path: Path, series: list[list[float]], target: float) -> None:
    """Accuracy (0..1) per round for each series, the centralised accuracy dashed."""
    w, h, left, right, top, bottom = 720, 440, 60, 20, 40, 50
    img: Canvas = np.full((h, w, 3), 255, dtype=np.uint8)
    rounds = max(len(s) for s in series)

    def px(r: int) -> float:
        return left + (r - 1) * (w - left - right) / max(1, rounds - 1)

    def py(a: float) -> float:
        return h - bottom - a * (h - top - bottom)

    for tick in range(6):
        y = int(py(tick / 5))
        img[y, left : w - right] = (225, 225, 225)
        _text(img, 18, y - 5, f"{tick / 5:.1f}", (0, 0, 0))
    for r in range(1, rounds + 1):
        if r == 1 or r % 5 == 0:
            _text(img, int(px(r)) - 4, h - bottom + 8, str(r), (0, 0, 0))
    img[top : h - bottom, left - 1 : left + 1] = 0
    img[h - bottom : h - bottom + 2, left : w - right] = 0
    for x in range(left, w - right, 12):
        img[int(py(target)) - 1 : int(py(target)) + 1, x : x + 6] = (120, 120, 120)
    for colour, values in zip(_COLOURS, series, strict=False):
        for r in range(1, len(values)):
            _line(img, (px(r), py(values[r - 1])), (px(r + 1), py(values[r])), colour)
    _text(img, left, 12, "ACCURACY PER ROUND - 5 NON-IID EDGES", (0, 0, 0))
    _text(img, w // 2 - 20, h - 18, "ROUND", (0, 0, 0))
    for i, (colour, name) in enumerate(zip(_COLOURS, _NAMES, strict=False)):
        y = int(py(0.42)) + i * 16
        img[y : y + 8, left + 300 : left + 316] = colour
        _text(img, left + 324, y - 1, name, (0, 0, 0))
    y = int(py(0.42)) + 4 * 16
    img[y + 3 : y + 5, left + 300 : left + 316] = (120, 120, 120)
    _text(img, left + 324, y - 1, "CENTRALISED", (0, 0, 0))
    write_png(path, img)


async def main() -> None:
    """Both parts, against one hub."""
    parser = argparse.ArgumentParser(prog="python -m bench.aggregator")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per model size")
    parser.add_argument("--sizes", default="100000,1000000,10000000", help="bytes, comma-separated")
    parser.add_argument("--accuracy-rounds", type=int, default=20)
    args = parser.parse_args()
    split = load_digits_split()
    async with hub() as url:
        await sizes_part(url, split, [int(s) for s in args.sizes.split(",")], args.rounds)
        await accuracy_part(url, split, args.accuracy_rounds)


if __name__ == "__main__":
    asyncio.run(main())
