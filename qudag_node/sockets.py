"""Listening sockets that take IPv4 and IPv6 alike (Fly's checks use one, 6PN the other)."""

from __future__ import annotations

import errno
import math
import socket

_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)


def dual_stack_socket(port: int) -> socket.socket:
    """A listening socket on every IPv6 and IPv4 address, or on IPv4 alone without IPv6."""
    try:
        return listening_socket(socket.AF_INET6, ("::", port))
    except OSError as e:
        if e.errno not in _NO_IPV6:
            raise
    return listening_socket(socket.AF_INET, ("0.0.0.0", port))  # noqa: S104


def listening_socket(family: socket.AddressFamily, address: tuple[str, int]) -> socket.socket:
    """A TCP socket of ``family`` listening on ``address``; an IPv6 one also takes IPv4."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def set_link_timeouts(sock: socket.socket, keepalive_idle: float, user_timeout: float) -> None:
    """Bound how long a peer link can hang on a peer that vanished without a word.

    TCP keepalive probes a connection after ``keepalive_idle`` seconds without traffic
    (three probes, a third of that apart), and ``TCP_USER_TIMEOUT`` drops it once sent
    data has gone unacknowledged for ``user_timeout`` seconds, instead of the kernel's
    retransmissions for about 15 minutes. Options this kernel lacks are left out.
    """
    idle = max(1, math.ceil(keepalive_idle))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", max(1, idle // 3)),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", max(1, math.ceil(user_timeout * 1000))),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
