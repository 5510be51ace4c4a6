"""A loopback port for a test or local process to listen on, chosen so nothing else takes it first.

Binding port 0 and closing the socket hands back a port from the kernel's ephemeral range, the same range
the kernel draws from for every outgoing connection's source port. Between closing that socket and the
child process binding the port (a second or more for a Python service), any connection on the machine may
take it as its source port, and the child exits with "address already in use": CI failed exactly so. A
port below the ephemeral range is never handed out for outgoing connections, so only another process
choosing the same port by chance can collide; the draw is random over ~20,000 ports and checked by
binding.

Standard library only: scripts/localstack.py and bench/ load this file by path without a virtualenv.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000  # above the well-known and most registered service ports
_FALLBACK_EPHEMERAL_START = 32_768  # Linux's default when /proc is not there
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_EPHEMERAL_START


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on now, outside the kernel's ephemeral range, not handed out before."""
    end = _ephemeral_start()
    if end - _LOWEST < 1_000:  # an unusual range setting: fall back to the kernel's choice
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(_LOWEST, end)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise OSError(f"no free loopback port found in {_LOWEST}-{end - 1}")
