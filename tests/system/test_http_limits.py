"""The API's connection limits and its answers to requests aiohttp cannot parse.

Real sockets on 127.0.0.1 against in-process nodes for the timeouts and the answers;
real node processes where a fact belongs to the process: its descriptor limit, its
memory, the size of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from aiohttp import web

from qudag_node.config import ConfigError
from qudag_node.httpserver import (
    MAX_DERIVED_CONNECTIONS,
    RESERVED_DESCRIPTORS,
    LimitedAppRunner,
    connection_cap,
    install_accept_error_handler,
    limits_from,
)
from qudag_node.metrics import Metrics
from tests.conftest import NodeFactory
from tests.nodeproc import NodeProcess, metric, request, wait_until

TX = "/api/v1/transactions"
HOST = "127.0.0.1"
#: Slack for the event loop to run a due timer on a loaded two-core machine.
SLACK = 1.0
#: A marker that must never come back in an answer.
MARK = b"zq7marker"


# --------------------------------------------------------------- raw HTTP helpers


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one raw HTTP response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _error(raw: bytes, status: int, code: str) -> None:
    """Check that ``raw`` is one JSON error response with ``status`` and ``code``."""
    got, headers, body = _parse(raw)
    assert got == status, raw
    assert headers["content-type"].startswith("application/json"), raw
    doc = json.loads(body)
    assert set(doc) == {"error"}
    assert set(doc["error"]) == {"code", "message"}
    assert doc["error"]["code"] == code, doc
    assert doc["error"]["message"]


async def _exchange(
    port: int, data: bytes, *, then: bytes | None = None, timeout: float = 30.0
) -> tuple[bytes, float]:
    """Send ``data`` (and ``then`` once the first bytes are sent), read until the node
    closes the connection; returns what came back and the seconds it took after the
    last bytes were sent."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        await writer.drain()
        if then is not None:
            writer.write(then)
            await writer.drain()
        started = time.monotonic()
        raw = await asyncio.wait_for(reader.read(), timeout)
        return raw, time.monotonic() - started
    finally:
        writer.close()


async def _metric(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of an in-process node's ``name`` samples whose labels include ``labels``
    (read without blocking the event loop the node runs in)."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(
            f'{k}="{v}"' in line for k, v in (labels or {}).items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def _health(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/health") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


def _post_head(length: int, extra: str = "") -> bytes:
    return (
        f"POST {TX} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


# ------------------------------------------------------------------ the timeouts


async def test_partial_headers_get_408_and_are_closed_at_the_header_timeout(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(QUDAG_HTTP_HEADER_TIMEOUT="0.5", QUDAG_HTTP_IDLE_TIMEOUT="30")
    with structlog.testing.capture_logs() as logs:
        raw, seconds = await _exchange(
            node.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + MARK
        )
    _error(raw, 408, "header_timeout")
    assert MARK not in raw
    assert 0.4 <= seconds < 0.5 + SLACK
    http = [e for e in logs if e.get("event", "").startswith("http_")]
    assert [(e["event"], e["log_level"], e["code"]) for e in http] == [
        ("http_request_refused", "info", "header_timeout")  # one line, at info
    ]


async def test_a_stalled_body_gets_408_and_is_closed_at_the_body_timeout(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(QUDAG_HTTP_BODY_TIMEOUT="0.5")
    raw, seconds = await _exchange(node.port, _post_head(100) + b"only part of it")
    _error(raw, 408, "body_timeout")
    assert 0.4 <= seconds < 0.5 + SLACK
    assert (
        await _metric(node.url, "qudag_http_connections_closed_total", {"reason": "body_timeout"})
        == 1
    )


async def test_a_client_leaving_inside_its_body_is_not_an_internal_error(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory()
    reader, writer = await asyncio.open_connection(HOST, node.port)
    writer.write(_post_head(1000, "Expect: 100-continue\r\n"))
    assert b" 100 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.write(b"part of the body")
    await writer.drain()
    writer.close()  # the route is reading the body when the client goes

    async def answered() -> bool:
        requests = "qudag_http_requests_total"
        return await _metric(node.url, requests, {"route": TX, "status": "400"}) == 1

    await _until(answered, 10, "the submit to end as the client's fault")
    assert await _metric(node.url, "qudag_http_requests_total", {"status": "500"}) == 0


async def test_an_unfinished_chunked_upload_is_closed_at_the_body_timeout(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(QUDAG_HTTP_BODY_TIMEOUT="0.5")
    head = (
        f"POST {TX} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    ).encode()
    raw, seconds = await _exchange(node.port, head)
    _error(raw, 408, "body_timeout")
    assert seconds < 0.5 + SLACK


async def test_a_body_trickling_below_the_minimum_rate_is_cut_off(
    node_factory: NodeFactory,
) -> None:
    # 10 bytes every 0.05 s is 200 B/s, under the 2,000 B/s floor; each byte arrives
    # well within the body timeout, so only the rate can stop it.
    node = await node_factory(QUDAG_HTTP_BODY_TIMEOUT="0.5", QUDAG_HTTP_MIN_BODY_RATE="2000")
    reader, writer = await asyncio.open_connection(HOST, node.port)
    started = time.monotonic()
    writer.write(_post_head(100_000))
    answer = asyncio.create_task(reader.read())
    try:
        while not answer.done() and time.monotonic() - started < 10:
            writer.write(b"x" * 10)  # a slow client's pace, not a synchronisation
            await asyncio.sleep(0.05)
        ended = time.monotonic()
        try:
            raw = await asyncio.wait_for(answer, 10)
        except ConnectionResetError:
            raw = b""  # bytes still arriving when the node closed: the kernel resets
    finally:
        writer.close()
    if raw:
        _error(raw, 408, "body_timeout")
    closed = await _metric(
        node.url, "qudag_http_connections_closed_total", {"reason": "body_too_slow"}
    )
    assert closed == 1
    # The floor applies after the first 0.5 s: 2,000 * (t - 0.5) passes 200 * t at 0.56 s.
    assert ended - started < 0.56 + SLACK


async def test_an_idle_connection_is_closed_and_keep_alive_still_works(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(QUDAG_HTTP_IDLE_TIMEOUT="0.5")
    reader, writer = await asyncio.open_connection(HOST, node.port)
    try:
        for _ in range(2):  # two requests on one connection
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status, headers, _ = _parse(head)
            assert status == 200
            await reader.readexactly(int(headers["content-length"]))
        started = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the node
        assert 0.4 <= time.monotonic() - started < 0.5 + SLACK
    finally:
        writer.close()
    assert not [e for e in logs if e.get("event", "").startswith("http_")]  # ordinary: no line
    closed = await _metric(
        node.url, "qudag_http_connections_closed_total", {"reason": "idle_timeout"}
    )
    assert closed == 1


async def test_a_client_that_stops_reading_its_answers_is_cut_off(
    node_factory: NodeFactory,
) -> None:
    # 400 pipelined /metrics requests (tens of kB each) and never a byte read: the node's
    # writes stall once the socket buffers are full, and it drops the connection.
    node = await node_factory(QUDAG_HTTP_BODY_TIMEOUT="0.5")
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect((HOST, node.port))
    client.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=client)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 400)

        async def cut_off() -> bool:
            closed = await _metric(
                node.url, "qudag_http_connections_closed_total", {"reason": "send_timeout"}
            )
            return closed == 1

        await _until(cut_off, 30, "the node to drop the connection that does not read")
        # What was sent before the drop comes through, then the reset or the end.
        with contextlib.suppress(ConnectionError):
            while await reader.read(1 << 16):
                pass
        assert reader.at_eof()
        assert await _health(node.url)
    finally:
        writer.close()


# ------------------------------------------------------ answers to bad requests

PARSER_FAILURES = {
    "uri_too_long": (414, b"GET /" + MARK * 1000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    "header_too_large": (431, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + MARK * 1000 + b"\r\n\r\n"),
    "too_many_headers": (
        431,
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, MARK) for i in range(101))
        + b"\r\n",
    ),
    "bad_method": (400, MARK.upper() + b"( / HTTP/1.1\r\nHost: x\r\n\r\n"),
    "duplicate_content_length": (
        400,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ),
    "ambiguous_length": (
        400,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    "bad_chunk": (
        400,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + MARK
        + b"\r\nabc\r\n0\r\n\r\n",
    ),
    # The first bytes of a TLS ClientHello: a handshake record, TLS 1.0 framing.
    "tls_on_plain_port": (400, bytes.fromhex("16030100c4010000c00303") + MARK + bytes(64)),
    "bad_request_line": (400, b"GET /" + MARK + b" HTTP/9.9\r\nHost: x\r\n\r\n"),
    "bad_header": (400, b"GET / HTTP/1.1\r\nHost: x\r\nX " + MARK + b": b\r\n\r\n"),
    "bad_content_length": (400, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"),
}


@pytest.mark.parametrize("code", sorted(PARSER_FAILURES))
async def test_every_parser_failure_is_a_json_error_without_the_input(
    node_factory: NodeFactory, code: str
) -> None:
    node = await node_factory()
    status, data = PARSER_FAILURES[code]
    raw, _ = await _exchange(node.port, data)
    _error(raw, status, code)
    assert MARK not in raw.lower()
    assert MARK.upper() not in raw
    assert b"Traceback" not in raw
    assert await _metric(node.url, "qudag_http_requests_refused_total", {"code": code}) == 1


async def test_a_bad_chunk_after_the_headers_is_answered_and_not_held_open(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(QUDAG_HTTP_BODY_TIMEOUT="60")
    head = (
        f"POST {TX} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(HOST, node.port)
    try:
        writer.write(head)
        # "100 Continue" comes once the route runs: the chunks now reach a body being read.
        assert b" 100 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(b"3\r\nabc\r\nzz" + MARK + b"\r\n")
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    _error(raw, 400, "bad_chunk")
    assert MARK not in raw


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "gzip, identity"])
async def test_encoded_bodies_are_refused_before_they_are_read(
    node_factory: NodeFactory, encoding: str
) -> None:
    node = await node_factory()
    body = b"not compressed at all"
    raw, _ = await _exchange(
        node.port,
        _post_head(len(body), f"Content-Encoding: {encoding}\r\nConnection: close\r\n") + body,
    )
    _error(raw, 415, "unsupported_encoding")


async def test_identity_encoding_is_accepted(node_factory: NodeFactory) -> None:
    node = await node_factory()
    body = b"plain bytes"
    raw, _ = await _exchange(
        node.port,
        _post_head(len(body), "Content-Encoding: identity\r\nConnection: close\r\n") + body,
    )
    assert _parse(raw)[0] == 202, raw


# ------------------------------------------------------------- the connection cap


async def test_at_the_cap_the_longest_waiting_connection_makes_room(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(QUDAG_MAX_API_CONNECTIONS="20", QUDAG_HTTP_IDLE_TIMEOUT="600")
    idle = [await asyncio.open_connection(HOST, node.port) for _ in range(60)]
    try:
        raw, _ = await _exchange(
            node.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=1.0
        )
        assert _parse(raw)[0] == 200
        # The oldest idle sockets were closed by the node: they read EOF.
        first_reader = idle[0][0]
        assert await asyncio.wait_for(first_reader.read(), 5) == b""
        assert (
            await _metric(node.url, "qudag_http_connections_closed_total", {"reason": "evicted"})
            >= 40
        )
        assert await _metric(node.url, "qudag_http_connections") <= 20
    finally:
        for _, writer in idle:
            writer.close()


async def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(QUDAG_MAX_API_CONNECTIONS="10", QUDAG_HTTP_BODY_TIMEOUT="60")
    busy = []
    try:
        for _ in range(10):  # each inside a body: not a connection to close for room
            reader, writer = await asyncio.open_connection(HOST, node.port)
            writer.write(_post_head(1000, "Expect: 100-continue\r\n"))
            assert b" 100 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(b"a few bytes")
            busy.append((reader, writer))
        raw, _ = await _exchange(node.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        _error(raw, 503, "too_many_connections")
        assert _parse(raw)[1]["retry-after"] == "1"
        for reader, _ in busy:  # none of them was closed to make room
            assert not reader.at_eof()
    finally:
        for _, writer in busy:
            writer.close()
    await _until(lambda: _health(node.url), 10, "/health once they left")


# ------------------------------------------------------------- failed accept()


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def test_accept_failures_are_counted_and_the_listener_comes_back() -> None:
    # A listener of its own in this process (no node: SQLite would fail too while the
    # descriptors are gone), with the API's runner and accept-error handler.
    metrics = Metrics("test")
    app = web.Application()
    app.router.add_get("/health", _ok)
    install_accept_error_handler(asyncio.get_running_loop(), metrics)
    runner = LimitedAppRunner(
        app, limits=limits_from(10, 10, 0, 10, 0), metrics=metrics, access_log=None
    )
    await runner.setup()
    await web.TCPSite(runner, HOST, 0).start()
    port = int(runner.addresses[0][1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    clients: list[socket.socket] = []

    def failures() -> float:
        value = metrics.registry.get_sample_value("qudag_accept_errors_total", {"errno": "EMFILE"})
        return value or 0.0

    async def failures_seen() -> bool:
        return failures() > 0

    try:
        # Leave this process no descriptor to accept with: connect clients until none is left.
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        try:
            while True:
                client = socket.socket()
                clients.append(client)
                client.setblocking(False)
                client.connect_ex((HOST, port))
        except OSError:
            pass
        await _until(failures_seen, 10, "a failed accept() to be counted")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for client in clients:
            client.close()
    try:
        assert failures() >= 1
        # asyncio retries the listener after 1 s; then it serves again.
        raw, _ = await _exchange(
            port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10
        )
        assert _parse(raw)[0] == 200
    finally:
        await runner.cleanup()


# ------------------------------------------------- the cap and the descriptor limit


def test_the_derived_cap_leaves_room_below_the_descriptor_limit() -> None:
    # 512: 128 reserved, two accept bursts of 64; 1024: two bursts of 128.
    assert connection_cap(0, 512) == 512 - RESERVED_DESCRIPTORS - 2 * 64 == 256
    assert connection_cap(0, 1024) == 1024 - RESERVED_DESCRIPTORS - 2 * 128 == 640
    assert connection_cap(0, 1 << 20) == MAX_DERIVED_CONNECTIONS
    assert connection_cap(100, 512) == 100
    with pytest.raises(ConfigError, match=r"RLIMIT_NOFILE.* is 128: too low"):
        connection_cap(0, 128)
    with pytest.raises(ConfigError, match=r"QUDAG_MAX_API_CONNECTIONS: 400 .*RLIMIT_NOFILE 512"):
        connection_cap(400, 512)


def _limited(nofile: int) -> tuple[str, ...]:
    """A command running the node under a descriptor limit of ``nofile``."""
    code = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
        "sys.argv = ['qudag-node', 'run']; "
        "runpy.run_module('qudag_node', run_name='__main__', alter_sys=True)"
    )
    return (sys.executable, "-c", code)


def test_a_cap_the_descriptor_limit_cannot_hold_stops_the_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUDAG_", "NODE_"))}
    env |= {
        "QUDAG_DATA_DIR": str(tmp_path / "data"),
        "QUDAG_API_PORT": "0",
        "QUDAG_P2P_PORT": "0",
        "QUDAG_MAX_API_CONNECTIONS": "400",
    }
    result = subprocess.run(
        _limited(512), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "QUDAG_MAX_API_CONNECTIONS" in lines[0]
    assert "RLIMIT_NOFILE 512" in lines[0]


@pytest.fixture
def limited_node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A node process whose descriptor limit is 512."""
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log", command=_limited(512))
    node.start()
    yield node
    node.stop()


def test_more_idle_sockets_than_descriptors_do_not_lock_out_health_or_submits(
    limited_node: NodeProcess,
) -> None:
    assert limited_node.port is not None
    idle = []
    try:
        for _ in range(700):  # more than the node's 512 descriptors
            idle.append(socket.create_connection((HOST, limited_node.port), timeout=10))
        # answered at once, not after the idle timeout (75 s) frees a descriptor; 3 s
        # leaves room for a machine busy with other tests
        started = time.monotonic()
        status, _ = request("GET", limited_node.url + "/health", timeout=3.0)
        assert status == 200
        assert time.monotonic() - started < 3.0
        status, body = request("POST", limited_node.url + TX, b"after the flood", timeout=10)
        assert status == 202, body
        assert (
            metric(limited_node.url, "qudag_http_connections_closed_total", {"reason": "evicted"})
            > 0
        )
        assert metric(limited_node.url, "qudag_accept_errors_total") == 0
        assert limited_node.proc is not None
        assert len(os.listdir(f"/proc/{limited_node.proc.pid}/fd")) < 512
    finally:
        for s in idle:
            s.close()


# ---------------------------------------------------------- memory and log volume


def _gzip_bomb() -> bytes:
    """About 1 MB of gzip that inflates to 1 GiB of zeros."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(1024)) + packer.flush()


def _rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


def test_twenty_parallel_gzip_bombs_leave_memory_alone(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log").start()
    try:
        assert node.proc is not None
        assert node.port is not None
        bomb = _gzip_bomb()
        assert 900_000 < len(bomb) < 1_200_000
        port = node.port

        async def one(encoding: str) -> bytes:
            head = _post_head(len(bomb), f"Content-Encoding: {encoding}\r\nConnection: close\r\n")
            raw, _ = await _exchange(port, head + bomb)
            return raw

        async def all_of_them() -> list[bytes]:
            return await asyncio.gather(*(one(("gzip", "deflate")[i % 2]) for i in range(20)))

        for raw in asyncio.run(all_of_them()):
            _error(raw, 415, "unsupported_encoding")
        assert _rss_mb(node.proc.pid, "VmHWM") < 200  # the peak, not only what is left
        assert _rss_mb(node.proc.pid, "VmRSS") < 200
        status, _ = request("GET", node.url + "/health", timeout=10)
        assert status == 200
    finally:
        node.stop()


def test_ten_thousand_bad_requests_grow_the_log_by_under_a_megabyte(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log").start()
    try:
        assert node.port is not None
        port = node.port
        kinds = [data for _, data in PARSER_FAILURES.values()]
        before = node.log_path.stat().st_size

        async def worker(first: int, count: int) -> list[int]:
            statuses = []
            for i in range(first, first + count):
                raw, _ = await _exchange(port, kinds[i % len(kinds)])
                statuses.append(_parse(raw)[0])
            return statuses

        async def flood() -> list[int]:
            parts = await asyncio.gather(*(worker(k * 200, 200) for k in range(50)))
            return [s for part in parts for s in part]

        statuses = asyncio.run(flood())
        assert len(statuses) == 10_000
        assert all(400 <= s < 500 for s in statuses)
        grown = node.log_path.stat().st_size - before
        assert grown < 1_000_000, grown
        refused = [r for r in node.records() if r.get("event") == "http_request_refused"]
        assert refused
        assert all(r["level"] == "info" for r in refused)

        def tells_what_it_held_back() -> bool:
            # The first line of a kind in a new period carries the count held back.
            asyncio.run(_exchange(port, PARSER_FAILURES["bad_method"][1]))
            return any(
                r.get("event") == "http_request_refused" and r.get("suppressed", 0) > 100
                for r in node.records()
            )

        wait_until(tells_what_it_held_back, 30, "a line with the count of those held back")
        assert "Traceback" not in node.logs()
        assert metric(node.url, "qudag_http_requests_refused_total") >= 10_000
    finally:
        node.stop()
