"""Free loopback ports, for tests, the demo and benchmarks that run side by side."""

from __future__ import annotations

import random
import socket
from collections import deque
from pathlib import Path

_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 20_000
_handed_out: deque[int] = deque(maxlen=4096)
"""Ports this process already handed out and may not have bound yet (the one piece of module
state: two calls before the first server binds must not return the same port)."""


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`, below the ephemeral range.

    The kernel's port 0 answers from the ephemeral range, which every outgoing connection also
    draws from: between this call and the server's bind, a client socket could take the port
    ("address already in use", seen in CI). Ports below that range are only ever taken by
    servers that ask for them.
    """
    top = _ephemeral_start() - 1
    if top - _LOWEST >= 1000:
        for _ in range(200):
            port = random.randint(_LOWEST, top)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.append(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    _handed_out.append(port)
    return port
