"""Strict request input: JSON batches, base64, query numbers and media types.

Most tests run against an in-process node over real sockets; the figures for a 16 MiB
batch of 2,000,000 items come from a real node process with the default limits.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from hashlib import blake2b
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.conftest import NodeFactory
from tests.nodeproc import NodeProcess

TX = "/api/v1/transactions"
#: The default QUDAG_MAX_BODY_BYTES; the attack body is exactly this long.
BODY_LIMIT = 16 << 20
BIG_ITEMS = 2_000_000
#: The issue's bounds for the big batch: its answer, and /health beside four of them.
BIG_ANSWER_BOUND = 0.5
HEALTH_BOUND = 0.1


def _tx_id(data: bytes) -> str:
    return blake2b(data, digest_size=32, person=b"qudag:tx").hexdigest()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client, closed at teardown."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


async def _answer(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes | None = None,
    content_type: str | None = "application/json",
) -> tuple[int, Any]:
    """POST ``body`` (or GET without one); the status and the JSON answer."""
    if body is None:
        request = session.get(url)
    else:
        headers = {} if content_type is None else {"Content-Type": content_type}
        skip = () if content_type is not None else ("Content-Type",)
        request = session.post(url, data=body, headers=headers, skip_auto_headers=skip)
    async with request as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


def _code(answer: tuple[int, Any]) -> tuple[int, str]:
    status, body = answer
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return status, body["error"]["code"]


async def _pending(session: aiohttp.ClientSession, url: str) -> int:
    status, doc = await _answer(session, f"{url}/api/v1/status")
    assert status == 200
    return int(doc["transactions"]["pending"])


# ------------------------------------------------------------------ JSON shape


@pytest.mark.parametrize(
    "body",
    [
        b'{"transactions": ' + b"[" * 1000 + b'"YQ=="' + b"]" * 1000 + b"}",
        b"[" * 100_000,
        b'{"a": ' * 1000 + b"1" + b"}" * 1000,
        b'{"transactions": [["YQ=="]]}',
        b'{"transactions": [{"tx": "YQ=="}]}',
        # a second "transactions" would silently replace the first
        b'{"transactions": ["YQ=="], "transactions": ["Yg=="]}',
    ],
    ids=["array-1000", "open-100000", "object-1000", "nested", "object-item", "twice"],
)
async def test_nesting_is_malformed_json_never_500(
    node_factory: NodeFactory, session: aiohttp.ClientSession, body: bytes
) -> None:
    node = await node_factory()
    assert _code(await _answer(session, node.url + TX, body)) == (400, "malformed_json")
    assert await _pending(session, node.url) == 0


async def test_only_the_one_document_shape_is_a_batch(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory()
    for body in (
        b'{"transactions": ["YQ=="], "note": "x"}',
        b'{"transactions": ["YQ=="], "more": 1}',
        b'"YQ=="',
        b"null",
    ):
        assert _code(await _answer(session, node.url + TX, body)) == (400, "bad_request"), body
    assert await _pending(session, node.url) == 0


async def test_items_are_counted_before_any_is_decoded(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory(QUDAG_MAX_SUBMIT_TXS="3")
    # four items that are not even base64: the count is what refuses them
    body = b'{"transactions": ["*", "*", "*", "*"]}'
    status, doc = await _answer(session, node.url + TX, body)
    assert (status, doc["error"]["code"]) == (400, "too_many_transactions")
    assert "limit 3" in doc["error"]["message"]
    three = b'{"transactions": ["YQ==", "Yg==", "Yw=="]}'
    assert (await _answer(session, node.url + TX, three))[0] == 202


# ------------------------------------------------------------------ base64


async def test_base64_must_be_canonical(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory()
    url = node.url + TX
    # "YR==" would decode to b"a" as "YQ==" does: one transaction, one spelling
    for item in ("YR==", "YWJ=", "YQ", "YQ=", "YQ===", "Y Q==", "YQ==\n", "YQ==YQ==", "YQ-_"):
        body = json.dumps({"transactions": ["Yg==", item]}).encode()
        status, doc = await _answer(session, url, body)
        assert (status, doc["error"]["code"]) == (400, "malformed_base64"), item
        assert "transaction 1 " in doc["error"]["message"]
    assert await _pending(session, node.url) == 0
    body = json.dumps({"transactions": ["YQ==", "YWI=", "YWJj", "/+8="]}).encode()
    status, doc = await _answer(session, url, body)
    assert status == 202
    assert doc["ids"] == [_tx_id(t) for t in (b"a", b"ab", b"abc", b"\xff\xef")]


# ------------------------------------------------------------------ queries


@pytest.mark.parametrize("value", [" 5", "5 ", "+5", "1_0", "\uff15", "\u0665", "0x10", "5.0", ""])
async def test_query_integers_are_ascii_digits_only(
    node_factory: NodeFactory, session: aiohttp.ClientSession, value: str
) -> None:
    node = await node_factory()
    for path in ("/api/v1/log?limit=", "/api/v1/log?from=", "/api/v1/evidence?limit="):
        url = node.url + path + quote(value, safe="")
        assert _code(await _answer(session, url)) == (400, "bad_request"), (path, value)
    status, doc = await _answer(session, node.url + "/api/v1/log?from=1&limit=5")
    assert status == 200
    assert doc["entries"] == []


@pytest.mark.parametrize("value", [" 5", "+5", "1_0", "1e1", "\uff15", "5.", ".5", "inf"])
async def test_wait_timeout_is_ascii_decimal_only(
    node_factory: NodeFactory, session: aiohttp.ClientSession, value: str
) -> None:
    node = await node_factory()
    url = f"{node.url}{TX}?wait=final&timeout={quote(value, safe='')}"
    body = b'{"transactions": ["YQ=="]}'
    assert _code(await _answer(session, url, body)) == (400, "bad_request"), value
    assert await _pending(session, node.url) == 0


# ------------------------------------------------------------------ media type


async def test_a_body_without_content_type_is_415(
    node_factory: NodeFactory, session: aiohttp.ClientSession
) -> None:
    node = await node_factory()
    url = node.url + TX
    status, code = _code(await _answer(session, url, b"hello", content_type=None))
    assert (status, code) == (415, "unsupported_media_type")
    assert await _pending(session, node.url) == 0
    answer = await _answer(session, url, b"hello", content_type="application/octet-stream")
    assert answer == (202, {"ids": [_tx_id(b"hello")]})


# ------------------------------------------------- a 16 MiB batch of 2,000,000 items


def _big_batch() -> bytes:
    """Exactly ``BODY_LIMIT`` bytes: a batch of ``BIG_ITEMS`` short base64 items."""
    head, tail = b'{"transactions": [', b"]}"
    items = b",".join([b'"YQ=="'] * BIG_ITEMS)
    pad = BODY_LIMIT - len(head) - len(items) - len(tail)
    assert pad >= 0
    body = head + items + b" " * pad + tail
    assert len(body) == BODY_LIMIT
    return body


def _post_raw(port: int, body: bytes, timeout: float = 30.0) -> tuple[int, Any, float]:
    """POST ``body`` as JSON on a new connection; status, JSON answer and seconds taken."""
    head = (
        f"POST {TX} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.perf_counter()
        # refused early, the node closes without reading the rest: the answer comes first
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head + body)
        raw = _read_all(sock)
        seconds = time.perf_counter() - started
    status, answer = _parse(raw)
    return status, answer, seconds


def _get_raw(port: int, path: str, timeout: float = 30.0) -> tuple[int, Any, float]:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.perf_counter()
        sock.sendall(request.encode())
        raw = _read_all(sock)
        seconds = time.perf_counter() - started
    status, answer = _parse(raw)
    return status, answer, seconds


def _read_all(sock: socket.socket) -> bytes:
    """Everything the node sent until it closed (a reset after the answer ends it too)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> tuple[int, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def test_a_16_mib_batch_of_2_000_000_items_is_refused_at_once(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log").start()
    try:
        body = _big_batch()
        alone = []
        for _ in range(3):
            status, answer, seconds = _post_raw(_port(node), body)
            assert (status, answer["error"]["code"]) == (400, "too_many_transactions")
            alone.append(seconds)

        # rounds of four such requests at once; /health is asked while they run, and a
        # probe counts if it started before any of the four was answered
        answered: list[tuple[int, str, float]] = []
        health: list[float] = []
        deadline = time.monotonic() + 120
        with ThreadPoolExecutor(4) as attackers:
            while len(health) < 100 and time.monotonic() < deadline:
                round_ = [attackers.submit(_post_raw, _port(node), body) for _ in range(4)]
                while not all(f.done() for f in round_):
                    during = not any(f.done() for f in round_)
                    status, doc, seconds = _get_raw(_port(node), "/health")
                    assert status == 200, doc
                    if during:
                        health.append(seconds)
                for f in round_:
                    status, answer, seconds = f.result()
                    answered.append((status, answer["error"]["code"], seconds))
        assert len(health) >= 100, f"{len(health)} probes during the requests in 120 s"
        assert {(s, c) for s, c, _ in answered} == {(400, "too_many_transactions")}
        big = [s for _, _, s in answered]
        print(
            f"\n16 MiB batch of {BIG_ITEMS:,} items alone: "
            f"{', '.join(f'{s * 1000:.0f}' for s in alone)} ms; "
            f"four at a time: {len(big)} answered, median {statistics.median(big) * 1000:.0f} ms,"
            f" max {max(big) * 1000:.0f} ms; /health while they ran: {len(health)} probes, "
            f"median {statistics.median(health) * 1000:.1f} ms, "
            f"max {max(health) * 1000:.1f} ms"
        )
        assert max(alone) < BIG_ANSWER_BOUND, alone
        assert max(health) < HEALTH_BOUND, sorted(health)[-5:]
        assert node.proc is not None
        assert node.proc.poll() is None
    finally:
        assert node.stop() == 0


def _port(node: NodeProcess) -> int:
    assert node.port is not None
    return node.port
