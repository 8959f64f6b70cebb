"""Loopback ports for the node processes that the benchmarks and the tests start.

A port found free by binding port 0 lies in the kernel's ephemeral range
(``net.ipv4.ip_local_port_range``), from which the kernel also takes the local port of
every outgoing connection. Under load, one of the many client connections of a test
running beside can take such a port between the check and the node's own bind, and the
node never comes up. So ports are chosen at random outside that range, where the kernel
hands out nothing by itself, and checked free by binding them.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Container
from contextlib import ExitStack
from pathlib import Path

#: The lowest port chosen (well above the ports services are known by).
LOWEST = 10_000
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_TRIES = 1_000


def ephemeral_range() -> range:
    """The kernel's ephemeral ports (Linux's default where it cannot be read)."""
    try:
        low, high = (int(v) for v in _EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _candidates(count: int) -> list[range]:
    """Where a block of ``count`` ports may start: outside the ephemeral range if there
    is room, else anywhere from :data:`LOWEST` on."""
    ephemeral = ephemeral_range()
    spans = [range(LOWEST, ephemeral.start - count + 1), range(ephemeral.stop, 65536 - count + 1)]
    spans = [s for s in spans if len(s) > 0]
    return spans or [range(LOWEST, 65536 - count + 1)]


def _pick(spans: list[range]) -> int:
    """A port of ``spans`` at random, each as likely (from the system's randomness, not
    ``random``'s state, which parallel test workers may share)."""
    k = secrets.randbelow(sum(len(s) for s in spans))
    for span in spans:
        if k < len(span):
            return span[k]
        k -= len(span)
    raise AssertionError("unreachable: k is below the spans' total")


def free_port_block(count: int, avoid: Container[int] = ()) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 now, none in
    ``avoid``, outside the ephemeral range."""
    spans = _candidates(count)
    for _ in range(_TRIES):
        base = _pick(spans)
        ports = range(base, base + count)
        if any(p in avoid for p in ports):
            continue
        with ExitStack() as stack:
            try:
                for port in ports:
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise RuntimeError(f"no block of {count} free ports on 127.0.0.1 outside the ephemeral range")


def free_ports(count: int) -> list[int]:
    """``count`` different ports free on 127.0.0.1 now, outside the ephemeral range."""
    ports: list[int] = []
    while len(ports) < count:
        ports.append(free_port_block(1, avoid=ports))
    return ports
