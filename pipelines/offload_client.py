"""The client side of inference offload: what a phone, a device or `edgefabric infer` runs."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import numpy as np
from numpy.typing import NDArray

from bus.mqtt import MqttClient
from bus.requester import Requester
from schemas import topics
from schemas.base import new_message_id
from schemas.codec import decode
from schemas.frames import pack
from schemas.offload import OffloadRequest, OffloadResponse
from schemas.tensor import encode_tensor


def downscale_to_digit(image: NDArray[np.generic]) -> NDArray[np.uint8]:
    """What the phone does before offloading: any grey image -> 8x8 grey levels 0..16.

    Block-averages to 8x8 (cropping the edges that do not divide) and maps the image's
    range to the digits' 0..16 scale, ink bright as in the training set.
    """
    grey = np.asarray(image, dtype=np.float64)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    if grey.ndim != 2 or min(grey.shape) < 8:
        raise ValueError(f"need a 2-D image of at least 8x8 pixels, got {grey.shape}")
    h, w = (grey.shape[0] // 8) * 8, (grey.shape[1] // 8) * 8
    blocks = grey[:h, :w].reshape(8, h // 8, 8, w // 8).mean(axis=(1, 3))
    low, high = float(blocks.min()), float(blocks.max())
    scaled = (blocks - low) / (high - low) if high > low else np.zeros_like(blocks)
    digit: NDArray[np.uint8] = np.rint(scaled * 16).astype(np.uint8)
    return digit


class OffloadClient:
    """Sends offload requests and matches the answers by correlation id.

    Args:
        bus: a connected MQTT client.
        name: names this client's reply topic (``topics.infer_reply(name)``).
    """

    def __init__(self, bus: MqttClient, *, name: str | None = None) -> None:
        self._requests = Requester(
            bus,
            topics.infer_reply(name or f"client-{new_message_id()[:12]}"),
            name="offload.client",
        )
        self.reply_topic = self._requests.reply_topic

    async def __aenter__(self) -> Self:
        await self._requests.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._requests.__aexit__(exc_type, exc, tb)

    async def infer(
        self, model: str, image: NDArray[np.generic], *, timeout: float = 5.0
    ) -> OffloadResponse:
        """Offload one image and wait for the answer (which may be an error answer).

        Raises:
            RequestTimeout: no answer within `timeout`.
        """
        correlation_id = new_message_id()
        header = OffloadRequest(
            model=model, reply_to=self.reply_topic, correlation_id=correlation_id
        )
        raw = await self._requests.request(
            topics.infer_request(model),
            pack(header, encode_tensor(np.ascontiguousarray(image))),
            correlation_id=correlation_id,
            timeout=timeout,
        )
        return decode(OffloadResponse, raw)
