"""`edgefabric infer`: offload one image to an edge, as the talk's phone does.

The image is pre-processed here, on the client, into what the edge model takes (an 8x8 grey
image, levels 0..16): a `.npy` array of any 2-D size, a binary or ASCII PGM file, or with
`--sample N` the N-th test digit bundled with scikit-learn.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


def read_pgm(path: Path) -> NDArray[np.float64]:
    """A PGM (P2 or P5) image as grey levels.

    Raises:
        ValueError: not a PGM file this reader understands.
    """
    data = path.read_bytes()
    magic = data[:2]
    if magic not in (b"P2", b"P5"):
        raise ValueError(f"{path}: not a PGM file (magic {magic!r})")
    tokens: list[bytes] = []
    pos = 2
    while len(tokens) < 3:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        tokens.append(data[pos:end])
        pos = end
    width, height, maxval = (int(t) for t in tokens)
    if magic == b"P5":
        dtype = np.uint8 if maxval < 256 else np.dtype(">u2")
        pixels = np.frombuffer(data, dtype=dtype, offset=pos + 1, count=width * height)
    else:
        pixels = np.array(data[pos:].split()[: width * height], dtype=np.float64)
    return pixels.astype(np.float64).reshape(height, width)


def _image(args: argparse.Namespace) -> tuple[NDArray[np.generic], int | None]:
    from pipelines.digits import load_digits_split
    from pipelines.offload_client import downscale_to_digit

    if args.sample is not None:
        split = load_digits_split()
        index = args.sample % len(split.y_test)
        return (split.x_test[index] * 16).astype(np.uint8).reshape(8, 8), int(split.y_test[index])
    path = Path(args.image)
    raw = np.load(path) if path.suffix == ".npy" else read_pgm(path)
    if raw.shape in ((8, 8), (64,)) and raw.max() <= 16:
        return raw.astype(np.uint8).reshape(8, 8), None
    return downscale_to_digit(raw), None


def _run(args: argparse.Namespace) -> int:
    from bus.mqtt import MqttClient
    from pipelines.offload_client import OffloadClient

    image, truth = _image(args)

    async def run() -> int:
        async with (
            MqttClient(args.broker, client_id="edgefabric-infer") as bus,
            OffloadClient(bus) as client,
        ):
            response = await client.infer(args.model, image, timeout=args.timeout)
        if response.error is not None:
            print(f"refused: {response.error.code}: {response.error.reason}", file=sys.stderr)
            return 1
        answer = response.answer
        where = "edge"
        if answer is not None and answer.cloud_result is not None:
            where = "cloud"
        known = "" if truth is None else f"   (true label {truth})"
        print(
            f"{response.label}, {response.confidence:.4f}   answered by the {where} model "
            f"in {response.latency_ms:.1f} ms{known}"
        )
        return 0

    return asyncio.run(run())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `infer` subcommand."""
    infer = sub.add_parser("infer", help="offload an image to an edge and print the answer")
    infer.add_argument("--broker", required=True, help="mqtt://HOST:PORT of the edge")
    source = infer.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help=".npy array or PGM image")
    source.add_argument("--sample", type=int, help="the N-th bundled test digit")
    infer.add_argument("--model", default="digits")
    infer.add_argument("--timeout", type=float, default=5.0)
    infer.set_defaults(handler=_run)
