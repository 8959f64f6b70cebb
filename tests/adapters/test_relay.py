"""The TCP relay of the network tests, run as a real process over real sockets."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.nodeproc import wait_until
from tests.relay import Relay, RelayError

#: Seconds any socket operation of these tests may block.
DEADLINE = 10.0
#: Seconds without progress after which a sender counts as stalled.
STALL = 1.0


class _Echo(socketserver.BaseRequestHandler):
    """Sends back everything it receives; ends its side at the client's EOF."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        while data := sock.recv(65536):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


class EchoServer(socketserver.ThreadingTCPServer):
    """An echo server on 127.0.0.1, serving from a thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.port: int = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.shutdown()
        self.server_close()
        self.thread.join(DEADLINE)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    """A running echo server."""
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture
def relay() -> Iterator[Relay]:
    """A running relay process."""
    with Relay() as r:
        yield r


def connect(port: int) -> socket.socket:
    """A client connection to the relay's ``port``, with the test deadline on every call."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.settimeout(DEADLINE)
    return sock


def receive(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes from ``sock``; fails on an early EOF."""
    chunks = []
    left = size
    while left:
        chunk = sock.recv(min(left, 65536))
        assert chunk, f"EOF after {size - left} of {size} bytes"
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def is_closed(sock: socket.socket) -> bool:
    """Whether the relay closed ``sock``: the next read is EOF (or a reset)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def round_trip(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` and check that the echo brings back the same bytes."""
    sock.sendall(data)
    assert receive(sock, len(data)) == data


def send_until_stalled(sock: socket.socket, limit: int) -> int:
    """Send zeros until a send makes no progress for :data:`STALL` s; the bytes sent.

    Stops at ``limit`` bytes when nothing holds the sender back.
    """
    chunk = bytes(1 << 20)
    sock.settimeout(STALL)
    sent = 0
    try:
        while sent < limit:
            sent += sock.send(chunk)
    except TimeoutError:
        pass
    finally:
        sock.settimeout(DEADLINE)
    return sent


def test_bytes_pass_both_ways_and_are_counted(relay: Relay, echo: EchoServer) -> None:
    relay.target("b", echo.port)
    port = relay.listen("a", "b")
    data = bytes(range(256)) * 40
    with connect(port) as client:
        round_trip(client, data)
        assert relay.stats() == {"bytes": 2 * len(data), "connections": 1, "open": 1}
        client.shutdown(socket.SHUT_WR)
        assert is_closed(client), "the echo's EOF is passed on"
    wait_until(lambda: relay.stats()["open"] == 0, DEADLINE, "the link to close")
    assert relay.stats() == {"bytes": 2 * len(data), "connections": 1, "open": 0}


def test_a_large_transfer_arrives_whole_in_both_directions(relay: Relay, echo: EchoServer) -> None:
    relay.target("b", echo.port)
    port = relay.listen("a", "b")
    data = bytes(i * 7 % 251 for i in range(1 << 16)) * 64  # 4 MiB, more than any buffer
    with connect(port) as client:
        sender = threading.Thread(target=client.sendall, args=(data,), daemon=True)
        sender.start()
        assert receive(client, len(data)) == data
        sender.join(DEADLINE)
    assert relay.stats()["bytes"] == 2 * len(data)


def test_a_target_that_does_not_read_stalls_the_sender(relay: Relay) -> None:
    limit = 128 << 20  # far more than the kernel buffers on the way can hold
    with socket.create_server(("127.0.0.1", 0)) as sink:
        sink.settimeout(DEADLINE)
        relay.target("b", sink.getsockname()[1])
        with connect(relay.listen("a", "b")) as client:
            upstream, _ = sink.accept()
            with upstream:
                assert send_until_stalled(client, limit) < limit, "the sender stalls"
                forwarded = relay.stats()["bytes"]
                assert forwarded < limit // 2, "the relay reads only as fast as the target"
                upstream.settimeout(DEADLINE)
                assert receive(upstream, forwarded) == bytes(forwarded), "and then it flows"


def test_cut_closes_the_nodes_links_and_refuses_new_ones_until_heal(
    relay: Relay, echo: EchoServer
) -> None:
    for node in ("a", "b", "c"):
        relay.target(node, echo.port)
    a_to_b = relay.listen("a", "b")
    c_to_a = relay.listen("c", "a")
    c_to_b = relay.listen("c", "b")
    with connect(a_to_b) as one, connect(c_to_a) as two, connect(c_to_b) as other:
        for sock in (one, two, other):
            round_trip(sock, b"before the cut")
        relay.cut("a")
        assert is_closed(one), "a link from the cut node is closed"
        assert is_closed(two), "a link to the cut node is closed"
        round_trip(other, b"a link between other nodes stays")
        assert relay.stats()["open"] == 1
        for port in (a_to_b, c_to_a):
            with connect(port) as late:
                assert is_closed(late), "a new link of the cut node is closed at once"
        relay.heal("a")
        with connect(a_to_b) as healed:
            round_trip(healed, b"after the heal")
    assert relay.stats()["connections"] == 6


def test_stall_holds_the_nodes_traffic_silently_until_heal(relay: Relay, echo: EchoServer) -> None:
    for node in ("a", "b", "c"):
        relay.target(node, echo.port)
    a_to_b = relay.listen("a", "b")
    c_to_b = relay.listen("c", "b")
    with connect(a_to_b) as stalled, connect(c_to_b) as other:
        round_trip(stalled, b"before the stall")
        relay.stall("a")
        stalled.sendall(b"held")
        stalled.settimeout(STALL)
        with pytest.raises(TimeoutError):  # no answer, and no close either
            stalled.recv(1)
        stalled.settimeout(DEADLINE)
        round_trip(other, b"other nodes still talk")
        with connect(a_to_b) as late:  # accepted, but silent as well
            late.sendall(b"late")
            late.settimeout(STALL)
            with pytest.raises(TimeoutError):
                late.recv(1)
            late.settimeout(DEADLINE)
            assert relay.stats()["open"] == 3, "nothing was closed"
            relay.heal("a")
            assert receive(late, 4) == b"late", "held bytes arrive after the heal"
        assert receive(stalled, 4) == b"held"
        round_trip(stalled, b"after the heal")


def test_a_listener_on_another_loopback_address_and_a_chosen_port(
    relay: Relay, echo: EchoServer
) -> None:
    relay.target("b", echo.port)
    port = relay.listen("a", "b")
    again = relay.listen("a", "b2", "127.0.0.2", port)  # the same port, another address
    assert again == port
    relay.target("b2", echo.port)
    with socket.create_connection(("127.0.0.2", port), timeout=DEADLINE) as client:
        client.settimeout(DEADLINE)
        round_trip(client, b"through the second address")


def test_a_connection_before_its_target_is_closed(relay: Relay, echo: EchoServer) -> None:
    port = relay.listen("a", "b")
    with connect(port) as early:
        assert is_closed(early)
    assert relay.stats() == {"bytes": 0, "connections": 1, "open": 0}
    relay.target("b", echo.port)
    with connect(port) as client:
        round_trip(client, b"now there is a target")


def test_a_target_that_refuses_closes_the_connection(relay: Relay) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refusing = unused.getsockname()[1]  # bound, not listening: connections are refused
        relay.target("b", refusing)
        with connect(relay.listen("a", "b")) as client:
            assert is_closed(client)
    assert relay.stats()["open"] == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("frobnicate", "unknown command 'frobnicate'"),
        ("listen a", "usage: listen SRC DST [HOST [PORT]]"),
        ("listen a b 127.0.0.1 p", "port 'p' is not a number"),
        ("target b port", "port 'port' is not from 1 to 65535"),
        ("target b 70000", "port '70000' is not from 1 to 65535"),
        ("stats now", "usage: stats"),
        ("", "empty command"),
    ],
)
def test_a_bad_command_is_answered_with_an_error(relay: Relay, line: str, message: str) -> None:
    with pytest.raises(RelayError) as caught:
        relay.command(line)
    assert str(caught.value) == message
    assert relay.stats() == {"bytes": 0, "connections": 0, "open": 0}, "it still answers"


def test_the_end_of_stdin_stops_the_relay_with_0(echo: EchoServer) -> None:
    relay = Relay()
    relay.target("b", echo.port)
    with connect(relay.listen("a", "b")) as client:
        round_trip(client, b"open while stdin ends")
        assert relay.close() == 0
        assert is_closed(client)
