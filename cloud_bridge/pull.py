"""One batch from a JetStream pull consumer, without a timeout task per message.

nats.py's `PullSubscription.fetch` waits for each message of a batch with its own
`asyncio.wait_for` (a task each), which was a third of the forwarder's time in the drain
bench. This sends the same no-wait pull request and reads the subscription's own queue under
one timeout for the whole batch. It uses the subscription's request subject and inbox (private
attributes of nats.py 2.x, pinned in pyproject), and falls back to `fetch` without them.
"""

from __future__ import annotations

import asyncio
import json

from nats.aio.msg import Msg
from nats.js import JetStreamContext

_NO_MESSAGES = {"404", "408"}


async def fetch_batch(
    psub: JetStreamContext.PullSubscription, batch: int, timeout: float
) -> list[Msg]:
    """Up to `batch` messages available now (an empty list when there are none).

    Raises:
        TimeoutError: the server did not answer within `timeout` (link or leaf down).

    """
    nms: str | None = getattr(psub, "_nms", None)
    deliver: str | None = getattr(psub, "_deliver", None)
    sub = getattr(psub, "_sub", None)
    queue: asyncio.Queue[Msg] | None = getattr(sub, "_pending_queue", None)
    if nms is None or deliver is None or sub is None or queue is None:
        return await psub.fetch(batch, timeout=timeout)
    msgs: list[Msg] = []
    while not queue.empty():  # left over from an earlier request that timed out here
        msg = queue.get_nowait()
        sub._pending_size -= len(msg.data)
        if not msg.headers or not msg.headers.get("Status"):
            msgs.append(msg)
    if len(msgs) >= batch:
        return msgs
    request = {"batch": batch - len(msgs), "no_wait": True}
    await sub._conn.publish(nms, json.dumps(request).encode(), deliver)
    try:
        async with asyncio.timeout(timeout):
            while len(msgs) < batch:
                msg = await queue.get()
                sub._pending_size -= len(msg.data)
                status = msg.headers.get("Status") if msg.headers else None
                if status in _NO_MESSAGES:
                    break
                if status is None:
                    msgs.append(msg)
    except TimeoutError:
        if not msgs:
            raise
    return msgs
