"""Listening sockets that take IPv4 and IPv6 alike (Fly's checks use one, 6PN the other)."""

from __future__ import annotations

import errno
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
