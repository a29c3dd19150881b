"""The client side of inference offload: what a phone, a device or `edgefabric infer` runs."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

import numpy as np
from numpy.typing import NDArray

from bus.errors import RequestTimeout
from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from bus.subscription import Overflow
from schemas import topics
from schemas.base import new_message_id
from schemas.codec import decode
from schemas.errors import SchemaError
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
        self._bus = bus
        self.reply_topic = topics.infer_reply(name or f"client-{new_message_id()[:12]}")
        self._waiting: dict[str, asyncio.Future[OffloadResponse]] = {}
        self._tasks = ServiceTasks("offload.client")

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        ready = asyncio.Event()
        self._tasks.spawn(self._replies(ready), "replies")
        await ready.wait()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.__aexit__(exc_type, exc, tb)

    async def _replies(self, ready: asyncio.Event) -> None:
        async with self._bus.subscribe(
            self.reply_topic, maxsize=1000, overflow=Overflow.DROP_OLDEST
        ) as sub:
            ready.set()
            async for message in sub:
                try:
                    response = decode(OffloadResponse, message.payload)
                except SchemaError:
                    continue
                waiter = self._waiting.pop(response.correlation_id or "", None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(response)

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
        waiter: asyncio.Future[OffloadResponse] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = waiter
        try:
            await self._bus.publish(
                topics.infer_request(model),
                pack(header, encode_tensor(np.ascontiguousarray(image))),
                response_topic=self.reply_topic,
                correlation_data=correlation_id.encode(),
            )
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError as exc:
            raise RequestTimeout(f"no answer from model {model!r} within {timeout} s") from exc
        finally:
            self._waiting.pop(correlation_id, None)
