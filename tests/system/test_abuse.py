"""Abuse control of writes: a rate limit per client, and the optional API token."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qudag_node.api import RateLimiter
from tests.conftest import NodeFactory
from tests.nodeproc import NodeProcess, metric, request

TX = "/api/v1/transactions"
TOKEN = "9c1e7a3f5b0d2e4c6a8f1b3d5e7c9a0f2b4d6e8a1c3f5b7d9e0a2c4f6b8d1e3a"  # noqa: S105 - a test value
ONE = b'{"transactions": ["YQ=="]}'


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client, closed at teardown."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


async def _post(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    """POST one JSON transaction; the status, the JSON answer and the headers."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    async with session.post(url + TX, data=ONE, headers=all_headers) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json(), dict(response.headers)


# ------------------------------------------------------------------ the bucket


def test_a_bucket_lets_a_burst_through_then_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, max_clients=10, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # another client has its own bucket
    clock.now += 0.25
    assert limiter.take("a") == pytest.approx(0.25)  # refused: half a token so far
    clock.now += 0.25
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 3600
    assert [limiter.take("a") for _ in range(4)][-2:] == [0.0, pytest.approx(0.5)]  # burst caps


def test_a_client_rotating_addresses_keeps_the_table_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, max_clients=1000, clock=clock)
    assert limiter.take("steady") == 0.0
    for i in range(100_000):
        limiter.take(f"rotating-{i}")
        assert len(limiter) <= 1000
        if i % 500 == 0:
            clock.now += 0.0001
            limiter.take("steady")  # seen recently, so never the one pushed out
    assert len(limiter) == 1000
    assert limiter.take("steady") > 0  # still limited: its bucket was kept


@pytest.mark.parametrize(("rate", "burst", "clients"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_a_bucket_needs_sane_parameters(rate: float, burst: int, clients: int) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        RateLimiter(rate, burst, clients)


# ------------------------------------------------------------------ rate limit


async def test_writes_over_the_rate_get_429_with_retry_after_and_reads_stay_open(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory(QUDAG_API_WRITE_RATE="0.5", QUDAG_API_WRITE_BURST="3")
    for _ in range(3):
        assert (await _post(session, node.url))[0] == 202
    status, body, headers = await _post(session, node.url)
    assert status == 429
    assert body["error"]["code"] == "rate_limited"
    assert int(headers["Retry-After"]) in (1, 2)  # 2 s a token, some of it already passed
    for path in ("/health", "/api/v1/status", "/api/v1/log"):
        async with session.get(node.url + path) as response:
            assert response.status == 200
    # a refused write takes no token: the client may write again after Retry-After
    deadline = time.monotonic() + 10
    while (answer := await _post(session, node.url))[0] == 429:
        assert time.monotonic() < deadline, "writes did not resume"
        await asyncio.sleep(0.05)
    assert answer[0] == 202


def test_a_refused_large_upload_is_answered_and_not_read(tmp_path: Path) -> None:
    env = {"QUDAG_API_WRITE_RATE": "0.01", "QUDAG_API_WRITE_BURST": "1"}
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log", env).start()
    try:
        assert request("POST", node.url + TX, b"first")[0] == 202
        body = b"x" * (16 << 20)
        head = (
            f"POST {TX} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        assert node.port is not None
        with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
            # the node answers at once and closes: sending the rest fails
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(head + body)
            raw = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    raw += chunk
        status_line, _, rest = raw.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 429 Too Many Requests"
        headers, _, answer = rest.partition(b"\r\n\r\n")
        assert b"Connection: close" in headers.split(b"\r\n")
        assert json.loads(answer)["error"]["code"] == "rate_limited"
        assert request("GET", node.url + "/health")[0] == 200
    finally:
        assert node.stop() == 0


async def test_the_limit_is_off_by_default(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory()
    statuses = await asyncio.gather(*(_post(session, node.url) for _ in range(300)))
    assert {s for s, _, _ in statuses} == {202}


async def test_fly_client_ip_counts_only_when_trusted(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    trusted = await node_factory(
        QUDAG_API_WRITE_RATE="0.01", QUDAG_API_WRITE_BURST="1", QUDAG_API_TRUST_FLY_CLIENT_IP="true"
    )
    clients = ["203.0.113.7", "203.0.113.8", "2001:db8:0:1::1", "::ffff:198.51.100.1"]
    for client in clients:
        assert (await _post(session, trusted.url, {"Fly-Client-IP": client}))[0] == 202
    # the same clients again, spelled otherwise: an IPv6 host counts as its /64
    for client in ["203.0.113.7", "2001:db8:0:1::2", "198.51.100.1", " 203.0.113.8 "]:
        status, body, _ = await _post(session, trusted.url, {"Fly-Client-IP": client})
        assert (status, body["error"]["code"]) == (429, "rate_limited"), client
    # no header, or one that is no address: the socket's peer, 127.0.0.1
    assert (await _post(session, trusted.url, {"Fly-Client-IP": "not-an-address"}))[0] == 202
    assert (await _post(session, trusted.url))[0] == 429

    untrusted = await node_factory(QUDAG_API_WRITE_RATE="0.01", QUDAG_API_WRITE_BURST="1")
    assert (await _post(session, untrusted.url, {"Fly-Client-IP": "203.0.113.7"}))[0] == 202
    status, _, _ = await _post(session, untrusted.url, {"Fly-Client-IP": "203.0.113.9"})
    assert status == 429  # the header is ignored: both came from 127.0.0.1


# ------------------------------------------------------------------ API token


async def test_writes_need_the_token_reads_do_not(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory(QUDAG_API_TOKEN=TOKEN)
    status, body, headers = await _post(session, node.url)
    assert (status, body["error"]["code"]) == (401, "token_required")
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    for authorization in (
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer \u00e9t\u00e9",
    ):
        status, body, headers = await _post(session, node.url, {"Authorization": authorization})
        assert (status, body["error"]["code"]) == (401, "bad_token"), authorization
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
        assert TOKEN not in str(body)
    async with session.get(f"{node.url}/api/v1/status") as response:
        assert response.status == 200
        assert (await response.json())["transactions"]["pending"] == 0
    for authorization in (f"Bearer {TOKEN}", f"bearer  {TOKEN} "):
        status, body, _ = await _post(session, node.url, {"Authorization": authorization})
        assert status == 202, body


def test_the_token_guards_a_node_process_and_submit_reads_it_from_the_environment(
    tmp_path: Path,
) -> None:
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log", {"QUDAG_API_TOKEN": TOKEN})
    node.start()
    try:
        status, body = request("POST", node.url + TX, b"no token")
        assert (status, body["error"]["code"]) == (401, "token_required")

        def submit(token: str | None) -> subprocess.CompletedProcess[str]:
            env = {k: v for k, v in os.environ.items() if not k.startswith("QUDAG_")}
            if token is not None:
                env["QUDAG_API_TOKEN"] = token
            command = [sys.executable, "-m", "qudag_node", "submit", "--url", node.url, "hi"]
            return subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=60, check=False
            )

        refused = submit(None)
        assert refused.returncode == 1
        assert "token_required" in refused.stderr
        wrong = submit("another-token-0123456789")
        assert wrong.returncode == 1
        assert "bad_token" in wrong.stderr
        assert "another-token" not in wrong.stderr
        accepted = submit(TOKEN)
        assert accepted.returncode == 0, accepted.stderr
        assert '"ids"' in accepted.stdout

        status, text = request("GET", node.url + "/metrics")
        assert status == 200
        assert TOKEN not in str(text)
        assert metric(node.url, "qudag_http_requests_total", {"status": "401"}) == 3
    finally:
        assert node.stop() == 0
    records = node.records()
    assert [r["code"] for r in records if r.get("event") == "write_refused"] == [
        "token_required",
        "token_required",
        "bad_token",
    ]
    assert TOKEN not in node.logs()
