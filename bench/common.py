"""What every bench shares: a broker to run against, percentiles, a table printer."""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from bus.broker import EmbeddedBroker
from bus.ports import free_port


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: Sequence[float]) -> float:
    """The median."""
    return statistics.median(values)


@contextlib.contextmanager
def mosquitto() -> Iterator[str]:
    """A Mosquitto on a free loopback port, tuned as production should be (TCP_NODELAY)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
            "max_inflight_messages 1000\nmax_queued_messages 1000000\n"
        )
        process = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            process.kill()
            process.wait(timeout=10)


@contextlib.asynccontextmanager
async def broker(kind: str) -> AsyncIterator[str]:
    """A broker URL: "mosquitto" or "amqtt" (embedded)."""
    if kind == "mosquitto":
        with mosquitto() as url:
            yield url
    else:
        async with EmbeddedBroker(port=free_port()) as embedded:
            yield embedded.url


def table(rows: Sequence[tuple[str, str]]) -> str:
    """Two aligned columns."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
