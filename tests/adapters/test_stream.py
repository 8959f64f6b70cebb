"""The log stream (``GET /api/v1/stream``) of a real node: resuming before it opened,
live entries, DAG events, a slow reader dropped while others keep up, the cap, and
subscribers that leave."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from qudag_node.core.types import TxId, VertexId
from qudag_node.ports import LogRecord
from qudag_node.stream import STREAM_RUN, SUBSCRIBER_BUFFER, entries_bytes
from tests.conftest import NodeFactory
from tests.nodeproc import metric

TX = "/api/v1/transactions"
DEADLINE = 30.0


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event as received."""

    kind: str
    id: str | None
    data: dict[str, Any]


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """The events of a stream, as they arrive (comments skipped)."""
    kind, ident, data = "message", None, ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                yield Event(kind, ident, json.loads(data))
            kind, ident, data = "message", None, ""
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            if field == "event":
                kind = value
            elif field == "id":
                ident = value
            elif field == "data":
                data = value


def expand(event: Event) -> list[dict[str, Any]]:
    """The log entries an ``entries`` event carries, each as ``/api/v1/log`` gives it;
    checks that the event's id is its last entry's position."""
    assert event.kind == "entries"
    d = event.data
    assert set(d) == {"first", "vertex", "tx_ids", "hashes"}
    assert 0 < len(d["tx_ids"]) == len(d["hashes"]) <= STREAM_RUN
    assert event.id == str(d["first"] + len(d["tx_ids"]) - 1)
    return [
        {"seq": d["first"] + k, "tx_id": tx_id, "vertex": d["vertex"], "hash": hash_}
        for k, (tx_id, hash_) in enumerate(zip(d["tx_ids"], d["hashes"], strict=True))
    ]


async def take(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    """The next ``count`` log entries (other events skipped), within the deadline; no
    event may carry entries beyond them."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(DEADLINE):
        async for event in events(response):
            if event.kind == "entries":
                got += expand(event)
                if len(got) >= count:
                    break
    assert len(got) == count
    return got


async def submit(session: aiohttp.ClientSession, url: str, count: int, tag: bytes) -> list[str]:
    """Submit ``count`` new transactions in one batch and wait until they are final."""
    txs = [base64.b64encode(tag + b"-%d-" % i + os.urandom(8)).decode() for i in range(count)]
    async with session.post(url + TX + "?wait=final", json={"transactions": txs}) as response:
        assert response.status == 200, await response.text()
        ids: list[str] = (await response.json())["ids"]
        return ids


async def value(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """A metric of the node (read off the event loop the node runs in)."""
    return await asyncio.to_thread(metric, url, name, labels)


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``condition()`` holds, polling, within the deadline."""
    async with asyncio.timeout(DEADLINE):
        while not await condition():  # noqa: ASYNC110 - a metric of the node, polled
            await asyncio.sleep(0.05)


async def test_resume_from_before_the_stream_opened_sends_each_entry_once_then_live(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory()
    async with aiohttp.ClientSession() as session:
        first = await submit(session, node.url, 30, b"before")
        async with (
            session.get(node.url + "/api/v1/stream?from=5") as by_from,
            session.get(node.url + "/api/v1/stream", headers={"Last-Event-ID": "9"}) as by_id,
        ):
            assert by_from.status == by_id.status == 200
            assert by_from.headers["Content-Type"] == "text/event-stream"
            assert by_from.headers["Cache-Control"] == "no-store"
            stored = await take(by_from, 26)
            assert [e["seq"] for e in stored] == list(range(5, 31))
            assert [e["tx_id"] for e in stored] == first[4:]
            later = await submit(session, node.url, 20, b"after")
            live = await take(by_from, 20)
            assert [e["seq"] for e in live] == list(range(31, 51))
            assert [e["tx_id"] for e in live] == later
            resumed = await take(by_id, 41)
            assert [e["seq"] for e in resumed] == list(range(10, 51))
        async with session.get(node.url + "/api/v1/log?from=5&limit=46") as page:
            logged = (await page.json())["entries"]
        assert stored + live == logged


async def test_streams_opened_while_the_log_grows_miss_nothing_and_repeat_nothing(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory()
    batches, size = 30, 40
    total = batches * size
    async with aiohttp.ClientSession() as session:
        opened: list[aiohttp.ClientResponse] = []
        async with asyncio.TaskGroup() as tg:

            async def load() -> None:
                for n in range(batches):
                    await submit(session, node.url, size, b"grow%d" % n)

            loading = tg.create_task(load())
            for start in (1, 7, 200, 1):
                # each opens at a different moment of the load, some mid-commit
                response = await session.get(f"{node.url}/api/v1/stream?from={start}")
                assert response.status == 200
                opened.append(response)
            await loading
        try:
            for start, response in zip((1, 7, 200, 1), opened, strict=True):
                got = await take(response, total - start + 1)
                assert [e["seq"] for e in got] == list(range(start, total + 1))
        finally:
            for response in opened:
                response.close()


async def test_dag_events_come_on_request_and_live_only_by_default(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory()
    async with (
        aiohttp.ClientSession() as session,
        session.get(node.url + "/api/v1/stream?events=log,dag") as dag,
        session.get(node.url + "/api/v1/stream") as plain,
    ):
        ids = await submit(session, node.url, 3, b"dag")
        seen: list[Event] = []
        async with asyncio.timeout(DEADLINE):
            async for event in events(dag):
                seen.append(event)
                if event.kind == "committed" and event.data["log_length"] >= 3:
                    break
        kinds = {e.kind for e in seen}
        assert {"certified", "committed", "entries"} <= kinds
        certified = next(e for e in seen if e.kind == "certified")
        assert certified.id is None
        assert set(certified.data) == {"round", "author", "vertex"}
        assert len(certified.data["author"]) == 64
        committed = [e for e in seen if e.kind == "committed"][-1]
        assert set(committed.data) == {"round", "leader", "vertex", "log_length"}
        entries = [entry for e in seen if e.kind == "entries" for entry in expand(e)]
        assert [e["tx_id"] for e in entries] == ids
        assert committed.data["log_length"] == entries[-1]["seq"]
        only_log = await take(plain, 3)
        assert [e["tx_id"] for e in only_log] == ids


def _slow_socket(port: int) -> socket.socket:
    """A stream subscriber over a raw socket with a tiny receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    sock.settimeout(DEADLINE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def _read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_a_slow_reader_is_dropped_while_others_and_submits_go_on(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory()
    dropped = {"reason": "slow_reader"}
    slow = await asyncio.to_thread(_slow_socket, node.port)
    # Entries, in batches of 5,000: more than the subscriber's buffer and the sockets
    # hold (the kernel may give the node's end a send buffer of 4 MiB).
    total = 60_000
    assert total > 4 * SUBSCRIBER_BUFFER
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(node.url + "/api/v1/stream") as reader,
        ):
            received: list[int] = []

            async def keep_reading() -> None:
                async for event in events(reader):
                    if event.kind == "entries":
                        received.extend(e["seq"] for e in expand(event))
                        if len(received) >= total:
                            return

            async with asyncio.TaskGroup() as tg:
                reading = tg.create_task(keep_reading())
                latencies = []
                for n in range(total // 5000):
                    started = time.monotonic()
                    await submit(session, node.url, 5000, b"load%d" % n)
                    latencies.append(time.monotonic() - started)
                async with asyncio.timeout(DEADLINE):
                    await reading
            assert received == list(range(1, total + 1)), "the reading subscriber got all"
            assert await value(node.url, "qudag_stream_dropped_total", dropped) == 1
            assert await value(node.url, "qudag_stream_subscribers") == 1  # the reader's
            assert max(latencies) < 5.0, latencies
        tail = await asyncio.to_thread(_read_to_end, slow)
    finally:
        slow.close()
    last = tail.rstrip(b"\r\n0").rsplit(b"event: ", 1)[1]
    assert last.startswith(b"dropped\ndata: "), tail[-300:]
    body = json.loads(last.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert body["code"] == "slow_reader"
    assert 1 < body["resume_from"] <= total + 1


async def test_the_cap_answers_503_and_a_client_that_leaves_is_removed(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(QUDAG_STREAM_MAX_SUBSCRIBERS="2")
    async with aiohttp.ClientSession() as session:
        first = await session.get(node.url + "/api/v1/stream")
        second = await session.get(node.url + "/api/v1/stream?events=log,dag")
        assert first.status == second.status == 200
        async with session.get(node.url + "/api/v1/stream") as third:
            assert third.status == 503
            assert third.headers["Retry-After"] == "5"
            assert (await third.json())["error"]["code"] == "too_many_subscribers"
        assert await value(node.url, "qudag_stream_subscribers") == 2
        first.close()  # the connection is dropped, not read to its end

        async def one_left() -> bool:
            return await value(node.url, "qudag_stream_subscribers") == 1

        await until(one_left)
        async with session.get(node.url + "/api/v1/stream") as again:
            assert again.status == 200
        second.close()

        async def none_left() -> bool:
            return await value(node.url, "qudag_stream_subscribers") == 0

        await until(none_left)


def _parse(data: bytes) -> list[Event]:
    """The events of a stream's bytes."""
    parsed = []
    for block in data.decode().split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        parsed.append(Event(fields["event"], fields.get("id"), json.loads(fields["data"])))
    return parsed


def test_entries_come_as_runs_of_one_vertex_of_at_most_stream_run() -> None:
    a, b = VertexId(b"\xaa" * 32), VertexId(b"\xbb" * 32)
    vertices = [a] * (2 * STREAM_RUN + 3) + [b] * 2 + [None]  # a pruned vertex: null
    records = [
        LogRecord(seq, TxId(bytes([seq % 256]) * 32), vertex, bytes([255 - seq % 256]) * 32)
        for seq, vertex in enumerate(vertices, start=7)
    ]
    parsed = _parse(entries_bytes(records))
    assert [len(e.data["tx_ids"]) for e in parsed] == [STREAM_RUN, STREAM_RUN, 3, 2, 1]
    assert [e.data["vertex"] for e in parsed] == [a.hex()] * 3 + [b.hex(), None]
    expanded = [entry for e in parsed for entry in expand(e)]
    assert expanded == [
        {"seq": r.seq, "tx_id": r.tx_id.hex(), "vertex": _hex(r.vertex), "hash": r.hash.hex()}
        for r in records
    ]


def _hex(vertex: VertexId | None) -> str | None:
    return None if vertex is None else vertex.hex()
