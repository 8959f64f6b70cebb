"""Batched ingest into one node with 100 log-stream subscribers against the same ingest
with none, in the same run; and the delay from an entry's finality to its delivery.

Each run starts a fresh node process and drives the ingest scenario's load (JSON
batches of 1,000 transactions from 4 connections, from the load generator's process)
for the scenario's window. In a run with subscribers, 100 clients of this process
follow ``GET /api/v1/stream`` from before the load starts to the end of the log,
counting the entries they receive (each must receive every one). The two kinds take
turns in pairs (the ingest rate of one fresh node drifts by 10 to 20 % from run to run
on this kind of machine, which a single pair cannot tell from a cost); the figure is the
geometric mean of the pairs' rate ratios, with its 95 % interval. The delay is the
node's own ``qudag_stream_delivery_delay_seconds`` histogram (durably final to written
to the subscriber's connection, one observation per write: its oldest entry), read as
the upper bound of the bucket holding its 99th percentile.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yarl

from bench.lab import BATCH, TX_SIZE, Lab
from bench.loadgen import LoadSpec, run_load
from bench.nodes import NodeProcess, cpu_seconds, log_length, running, wait_for_log
from bench.pairs import paired_ratio, run_pairs, turns
from bench.report import Row, per_second

#: Goal of the issue: the rate with subscribers against the rate without.
GOAL_RATIO = 0.8
SUBSCRIBERS = 100
CLIENTS = 4
#: Seconds allowed for the acknowledged transactions to become final, and delivered.
DRAIN_TIMEOUT = 120.0
_EVENT = b"event: entries\n"
_NULL = b'"vertex":null'
_LONGEST = max(len(_EVENT), len(_NULL))
_DELAY = "qudag_stream_delivery_delay_seconds_bucket"


@dataclass(frozen=True)
class StreamRun:
    """One half: the finalized rate, and with subscribers what they received."""

    rate: float  # finalized tx/s over the load window
    window: float
    stored: int  # log entries at the end
    received: tuple[int, ...]  # entries each subscriber received
    delay_p99: float | None  # seconds, the bucket bound (None: no subscriber)
    writes: int  # observations of the delay histogram
    node_cpu: float  # the node's CPU seconds per finalized transaction in the window
    readers_cpu: float  # share of a core this process (the subscribers) used in the window


class _Subscriber:
    """One stream client that counts the entries it receives, over a plain socket (the
    cheapest reader: the bench's process shares the machine with the node).

    It counts without parsing: an ``entries`` event's data holds 10 quotes of its own
    (8 with a null vertex) and 4 per entry (its tx id and running hash)."""

    def __init__(self) -> None:
        self.entries = 0
        self._quotes = self._events = self._nulls = 0

    async def follow(self, host: str, port: int, ready: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        try:
            writer.write(f"GET /api/v1/stream HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"stream answered {head[:20]!r}")
            ready.set()
            tail = b""
            # Events are written whole, so the chunked framing never splits a marker;
            # a read may, and the joint of two reads is counted apart.
            while chunk := await reader.read(1 << 18):
                self._events += _count(_EVENT, tail, chunk)
                self._nulls += _count(_NULL, tail, chunk)
                self._quotes += chunk.count(b'"')
                self.entries = (self._quotes - 10 * self._events + 2 * self._nulls) // 4
                tail = chunk[1 - _LONGEST :]
        finally:
            writer.close()


def _count(marker: bytes, tail: bytes, chunk: bytes) -> int:
    """``marker``'s occurrences in ``chunk`` and across its joint with the ``tail`` of
    the chunk before."""
    joint = tail[max(0, len(tail) + 1 - len(marker)) :] + chunk[: len(marker) - 1]
    return chunk.count(marker) + joint.count(marker)


def _p99_bound(text: str) -> tuple[float | None, int]:
    """The upper bound of the bucket holding the 99th percentile, and the count."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(_DELAY + "{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    count = int(buckets[-1][1]) if buckets else 0
    if not count:
        return None, 0
    return next(le for le, seen in buckets if seen >= 0.99 * count), count


async def measure(directory: Path, seconds: float, subscribers: int) -> StreamRun:
    """One half: a fresh node under the ingest load, with ``subscribers`` following."""
    node = NodeProcess(directory / "data")
    async with (
        running(node),
        aiohttp.ClientSession() as session,
    ):
        clients = [_Subscriber() for _ in range(subscribers)]
        url = yarl.URL(node.url)
        assert url.host is not None
        assert url.port is not None
        marks: list[tuple[float, int, float, float]] = []

        async def mark() -> None:
            log = await log_length(session, node.url)
            marks.append((time.monotonic(), log, cpu_seconds(node.pid), time.process_time()))

        async with asyncio.TaskGroup() as tg:
            following = []
            for client in clients:
                ready = asyncio.Event()
                following.append(tg.create_task(client.follow(url.host, url.port, ready)))
                await ready.wait()
            spec = LoadSpec(
                urls=(node.url,), connections=CLIENTS, duration=seconds, batch=BATCH, size=TX_SIZE
            )
            load = await run_load(spec, mark, mark)
            if load.failed:
                raise RuntimeError(f"submits failed: {load.first_error}")
            await wait_for_log(session, node.url, load.transactions, DRAIN_TIMEOUT)
            stored = await log_length(session, node.url)
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while any(c.entries < stored for c in clients) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            async with session.get(node.url + "/metrics") as resp:
                p99, writes = _p99_bound(await resp.text())
            for task in following:
                task.cancel()
    (start, at_start, cpu_start, own_start), (end, at_end, cpu_end, own_end) = marks
    return StreamRun(
        readers_cpu=(own_end - own_start) / (end - start),
        rate=(at_end - at_start) / (end - start),
        node_cpu=(cpu_end - cpu_start) / max(1, at_end - at_start),
        window=end - start,
        stored=stored,
        received=tuple(c.entries for c in clients),
        delay_p99=p99,
        writes=writes,
    )


async def scenario(lab: Lab) -> list[Row]:
    """Ingest with 100 stream subscribers against none, taking turns in pairs; the
    delivery delay's p99."""
    seconds = lab.scale.stream_seconds

    async def run(turn: int, watched: bool) -> StreamRun:
        subscribers = SUBSCRIBERS if watched else 0
        done = await measure(lab.directory(f"stream-{turn}-{subscribers}"), seconds, subscribers)
        lab.clean()
        return done

    pairs = await run_pairs(lab.scale.stream_pairs, run)
    ratio, low, high = paired_ratio([(w.rate, a.rate) for w, a in pairs])
    watched, alone = [w for w, _ in pairs], [a for _, a in pairs]
    complete = all(n == w.stored for w in watched for n in w.received)
    delays = [w.delay_p99 for w in watched if w.delay_p99 is not None]
    delay = f"{max(delays) * 1000:g} ms" if delays else "-"
    order = " ".join("S" if first else "N" for first in turns(lab.scale.stream_pairs))
    return [
        Row(
            "stream",
            f"{per_second(_mean(w.rate for w in watched))} finalized with {SUBSCRIBERS}"
            f" subscribers; delivery p99 <= {delay}",
            f"{per_second(_mean(a.rate for a in alone))} with none",
            ratio,
            f">= {GOAL_RATIO} x, every entry delivered to each",
            ratio >= GOAL_RATIO and complete,
            (
                f"{CLIENTS} connections x {BATCH}-transaction JSON batches for {seconds:.0f} s"
                f" a run into a fresh node each time, in the order {order} (S: {SUBSCRIBERS}"
                " GET /api/v1/stream clients in the bench process, opened before the load;"
                " N: none); rates of the pairs (S/N): "
                + ", ".join(f"{w.rate:,.0f}/{a.rate:,.0f}" for w, a in pairs),
                f"the pairs' rate ratio {ratio:.2f} x, 95 % interval {low:.2f} to {high:.2f}",
                f"each subscriber received every entry: {complete}"
                f" ({sum(w.stored for w in watched):,} entries each over the S runs)",
                "delivery delay: durably final to written to the subscriber's connection,"
                f" {sum(w.writes for w in watched):,} writes; p99 read as its histogram"
                " bucket's bound, the worst run's",
                "node CPU per finalized transaction:"
                f" {_mean(w.node_cpu for w in watched) * 1e6:.0f} µs with subscribers,"
                f" {_mean(a.node_cpu for a in alone) * 1e6:.0f} µs without; the subscribers'"
                f" process used {_mean(w.readers_cpu for w in watched):.0%} of a core",
            ),
        )
    ]


def _mean(values: Iterable[float]) -> float:
    return statistics.fmean(values)
