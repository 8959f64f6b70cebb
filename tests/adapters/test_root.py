"""The composition root, in process: serve() builds a node over a real data dir, tells
its ports, stops on its trigger, and bounds the shutdown by QUDAG_SHUTDOWN_TIMEOUT."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qudag_node.config import Settings, load_settings
from qudag_node.failure import NodeFailure
from qudag_node.root import Started, serve

DEADLINE = 30.0


def _settings(data: Path, **overrides: str) -> Settings:
    return load_settings(
        {
            "NODE_ID": "root",
            "QUDAG_DATA_DIR": str(data),
            "QUDAG_API_HOST": "127.0.0.1",
            "QUDAG_API_PORT": "0",
            "QUDAG_P2P_PORT": "0",
            **overrides,
        }
    )


class Served:
    """A node run by :func:`serve` in this event loop, with its trigger."""

    def __init__(self, settings: Settings) -> None:
        self.stop = asyncio.Event()
        self._started: asyncio.Future[Started] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(
            serve(settings, shutdown_trigger=self.stop.wait, on_started=self._started.set_result)
        )

    async def started(self) -> Started:
        either: set[asyncio.Future[Any]] = {self.task, self._started}
        async with asyncio.timeout(DEADLINE):
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            self.task.result()
            raise AssertionError("the node stopped while starting")
        return self._started.result()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as s:
        yield s


async def _status(session: aiohttp.ClientSession, started: Started) -> Any:
    async with session.get(f"http://127.0.0.1:{started.api_port}/api/v1/status") as response:
        assert response.status == 200
        return await response.json()


async def _holds_one(session: aiohttp.ClientSession, started: Started) -> bool:
    """Whether the engine holds a transaction (pending, in flight or final)."""
    doc = await _status(session, started)
    return bool(sum(doc["transactions"].values()) + doc["log"]["length"])


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds, failing after :data:`DEADLINE` seconds."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert time.monotonic() < deadline, f"not within {DEADLINE} s"
        await asyncio.sleep(0.01)


async def test_serve_tells_its_ports_and_stops_cleanly_on_its_trigger(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    settings = _settings(tmp_path / "data")
    first = Served(settings)
    ports = await first.started()
    assert ports.p2p_port is None  # alone, without PEER_AUTH_TOKEN: no peer port
    doc = await _status(session, ports)
    assert doc["p2p"]["port"] is None
    key = doc["node"]["public_key"]
    first.stop.set()
    async with asyncio.timeout(settings.shutdown_timeout):
        await first.task  # returns: a clean stop
    with pytest.raises(aiohttp.ClientConnectionError):
        await _status(session, ports)
    # the database was closed and the key kept: the same node starts again
    again = Served(settings)
    assert (await _status(session, await again.started()))["node"]["public_key"] == key
    again.stop.set()
    await asyncio.wait_for(again.task, DEADLINE)


async def test_a_shutdown_held_up_past_its_timeout_stops_the_node(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    settings = _settings(tmp_path / "data", QUDAG_SHUTDOWN_TIMEOUT="1")
    served = Served(settings)
    ports = await served.started()
    # another connection holds the database's write lock: the pump's next write waits
    # for it (SQLite's busy timeout, 5 s, is longer than the shutdown's); closing the
    # database waits for it too, so this test takes about 10 s
    lock = sqlite3.connect(settings.data_path / "qudag.db", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        url = f"http://127.0.0.1:{ports.api_port}/api/v1/transactions"
        client = asyncio.create_task(session.post(url, data=b"held up"))
        await _until(lambda: _holds_one(session, ports))  # its write waits for the lock
        served.stop.set()
        began = time.monotonic()
        with pytest.raises(NodeFailure, match=r"the shutdown took longer than 1 s"):
            await asyncio.wait_for(served.task, DEADLINE)
        assert time.monotonic() - began >= settings.shutdown_timeout
        with pytest.raises(aiohttp.ClientError):  # never acknowledged
            async with await client as response:
                response.raise_for_status()
    finally:
        lock.close()


async def test_the_status_shows_the_log_as_far_as_it_is_durable(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Under load, the log head in /api/v1/status is always one /api/v1/log serves,
    with the same running hash: never an entry the group commit is still writing."""
    served = Served(_settings(tmp_path / "data"))
    ports = await served.started()
    base = f"http://127.0.0.1:{ports.api_port}/api/v1"
    submitted = 0

    async def load() -> None:
        nonlocal submitted
        while submitted < 20_000:
            batch = [f"durable {submitted + k}".encode() for k in range(500)]
            body = {"transactions": [base64.b64encode(b).decode() for b in batch]}
            async with session.post(f"{base}/transactions", json=body) as r:
                assert r.status == 202, await r.text()
            submitted += len(batch)

    checked = 0
    async with asyncio.TaskGroup() as tg:
        loading = tg.create_task(load())
        while not loading.done() or checked == 0:
            log = (await _status(session, ports))["log"]
            if log["length"]:
                async with session.get(f"{base}/log?from={log['length']}&limit=1") as r:
                    assert r.status == 200
                    entries = (await r.json())["entries"]
                assert [e["hash"] for e in entries] == [log["hash"]], log
                checked += 1
            await asyncio.sleep(0)
    assert checked > 10
    served.stop.set()
    await asyncio.wait_for(served.task, DEADLINE)
