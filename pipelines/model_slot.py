"""A named model with one active ONNX Runtime session, swappable while it serves.

Inference runs in worker threads (`asyncio.to_thread`) so the event loop keeps serving the
bus. A swap replaces the session reference in one assignment: a call already running keeps
the session it started with, and the next call gets the new one, so no request fails or
mixes versions. The previous session is kept for a one-message rollback.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from pipelines.errors import ModelLoadError


def make_session(model: bytes, *, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session sized for a small edge box.

    Raises:
        ModelLoadError: the bytes are not a model ONNX Runtime can load.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exception classes
        raise ModelLoadError(f"cannot load model: {exc}") from exc


@dataclass(frozen=True)
class LoadedModel:
    """One version of a model, loaded."""

    version: str
    session: ort.InferenceSession
    sha256: str = ""

    @property
    def input_name(self) -> str:
        """Name of the (single) input."""
        return str(self.session.get_inputs()[0].name)

    @property
    def input_shape(self) -> list[int | str | None]:
        """Declared input shape; strings and None are free dimensions (the batch)."""
        return list(self.session.get_inputs()[0].shape)


class ModelSlot:
    """The active version of one model, and the one before it."""

    def __init__(self, name: str, active: LoadedModel, *, samples: int = 32) -> None:
        self.name = name
        self.active = active
        self.previous: LoadedModel | None = None
        self.swaps = 0
        self.samples: deque[NDArray[np.float32]] = deque(maxlen=samples)
        """Recent real inputs (one row each): a candidate version is validated on them."""

    def remember(self, inputs: NDArray[np.float32]) -> None:
        """Keep the first row of a batch as a validation sample (thread-safe append)."""
        if len(inputs):
            self.samples.append(np.array(inputs[:1], dtype=np.float32))

    @property
    def version(self) -> str:
        """The version new calls run on."""
        return self.active.version

    def run_sync(self, inputs: NDArray[np.float32]) -> tuple[NDArray[np.float32], str]:
        """Run the active version (in the caller's thread); returns outputs and version."""
        model = self.active  # one read: the whole call uses this version
        (outputs,) = model.session.run(None, {model.input_name: inputs})
        self.remember(inputs)
        return np.asarray(outputs, dtype=np.float32), model.version

    async def run(self, inputs: NDArray[np.float32]) -> tuple[NDArray[np.float32], str]:
        """Run the active version in a worker thread."""
        return await asyncio.to_thread(self.run_sync, inputs)

    def run_outputs_sync(
        self, inputs: NDArray[np.float32], output_names: list[str] | None = None
    ) -> tuple[dict[str, NDArray[np.float32]], str]:
        """Run the active version; every output (or `output_names`) by name, and the version."""
        model = self.active
        names = output_names or [o.name for o in model.session.get_outputs()]
        values = model.session.run(names, {model.input_name: inputs})
        self.remember(inputs)
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, values, strict=True)}, (
            model.version
        )

    def swap(self, candidate: LoadedModel) -> None:
        """Make `candidate` active; the current one becomes the rollback target."""
        self.previous, self.active = self.active, candidate
        self.swaps += 1

    def rollback(self) -> bool:
        """Go back to the previous version and drop the current one; False when there is none.

        One step only: the version rolled back from is not kept to roll "forward" to, since
        an operator rolls back because it is bad; a fixed model comes as a new version.
        """
        if self.previous is None:
            return False
        self.active, self.previous = self.previous, None
        self.swaps += 1
        return True
