"""Batched-submit ingest into one real node process, beside raw sqlite3 on the same disk.

The node (``python -m qudag_node run``, under ``strace`` counting its fsync calls when
strace is installed) takes JSON batches of 1,000 transactions of 256 random bytes from 4
keep-alive connections of the load generator's own process, for a fixed time or a fixed
count. During the load window this measures the finalized rate (log length at the
window's end minus at its start), the node's CPU time (/proc) and its fsync calls;
afterwards it waits until every acknowledged transaction is final, stops the node (which
checkpoints its write-ahead log) and weighs the database.

The reference, measured in the same run once the node has stopped: plain ``sqlite3``
``executemany`` of as many ``(id, data)`` rows of the same shape (32-byte unique id,
256-byte payload) as the node stored, so that both tables end the same size, into a
WAL database with ``synchronous=FULL`` (the node's setting) on the same disk, one
transaction per 1,000 rows.

As a command (one node, count-bounded, as before the suite)::

    python -m bench.ingest [--total 200000] [--batch 1000] [--clients 4] [--size 256]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.lab import BATCH, TX_SIZE, Lab
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.nodes import (
    NodeProcess,
    cpu_seconds,
    database_bytes,
    log_length,
    peak_rss_bytes,
    rss_bytes,
    running,
    strace_available,
    sync_calls,
    wait_for_log,
)
from bench.report import Row, mib, per_second

#: Goals of the issue: ratio to the reference, and absolute rate.
GOAL_RATIO = 0.5
GOAL_RATE = 20_000
#: Connections the load generator submits batches on.
CLIENTS = 4
#: Seconds allowed for the acknowledged transactions to become final after the load.
DRAIN_TIMEOUT = 120.0


def reference_rate(rows: int, batch: int, size: int, directory: Path) -> float:
    """Rows per second of plain sqlite3 executemany, one transaction per ``batch`` rows,
    WAL and ``synchronous=FULL`` like the node."""
    db = sqlite3.connect(directory / "reference.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id BLOB NOT NULL UNIQUE, data BLOB NOT NULL)")
        payload = os.urandom(size)
        started = time.perf_counter()
        for start in range(0, rows, batch):
            chunk = [
                (hashlib.blake2b(payload + i.to_bytes(8, "big"), digest_size=32).digest(), payload)
                for i in range(start, min(rows, start + batch))
            ]
            db.execute("BEGIN")
            db.executemany("INSERT INTO t (id, data) VALUES (?, ?)", chunk)
            db.execute("COMMIT")
        elapsed = time.perf_counter() - started
    finally:
        db.close()
    for path in directory.glob("reference.db*"):
        path.unlink()
    return rows / elapsed


@dataclass(frozen=True)
class IngestRun:
    """Figures of one batched-ingest run."""

    load: LoadResult
    window: float  # seconds between the load generator's start and its deadline
    finalized: int  # log entries appended during the window
    all_final_after: float  # seconds from the start until every acknowledged tx was final
    stored: int  # transactions in the log at the end
    node_cpu: float  # the node's CPU seconds during the window
    fsyncs: int | None  # fsync + fdatasync calls during the window (None: no strace)
    disk: int  # database bytes after a clean stop
    rss: int
    peak_rss: int
    reference: float  # sqlite3 rows per second, as many rows as the node stored

    @property
    def rate(self) -> float:
        """Finalized transactions per second during the window."""
        return self.finalized / self.window

    @property
    def cpu_per_tx(self) -> float:
        """The node's CPU seconds per finalized transaction during the window."""
        return self.node_cpu / self.finalized

    @property
    def disk_ratio(self) -> float:
        """Database bytes per raw transaction byte."""
        return self.disk / (self.stored * TX_SIZE)


@dataclass
class _Marks:
    """Readings at the load window's start and end."""

    wall: float = 0.0
    clock: float = 0.0
    log: int = 0
    cpu: float = 0.0


async def measure_ingest(
    directory: Path,
    seconds: float,
    *,
    total: int | None = None,
    batch: int = BATCH,
    clients: int = CLIENTS,
    size: int = TX_SIZE,
) -> IngestRun:
    """Run the node under batched load for ``seconds`` (or until ``total`` transactions
    are acknowledged), then the reference."""
    trace = directory / "fsync.trace" if strace_available() else None
    node = NodeProcess(directory / "data", trace=trace)
    async with running(node), aiohttp.ClientSession() as session:
        marks = (_Marks(), _Marks())

        async def mark(which: int) -> None:
            m = marks[which]
            m.wall, m.clock = time.time(), time.monotonic()
            m.log, m.cpu = await log_length(session, node.url), cpu_seconds(node.pid)

        spec = LoadSpec(
            urls=(node.url,),
            connections=clients,
            duration=seconds if total is None else 3600.0,
            batch=batch,
            size=size,
            requests=None if total is None else -(-total // batch),
        )
        load = await run_load(spec, lambda: mark(0), lambda: mark(1))
        if load.failed:
            raise RuntimeError(f"submits failed: {load.first_error}")
        final_at = await wait_for_log(session, node.url, load.transactions, DRAIN_TIMEOUT)
        stored = await log_length(session, node.url)
        rss, peak = rss_bytes(node.pid), peak_rss_bytes(node.pid)
    start, end = marks
    reference = reference_rate(stored, batch, size, directory)
    return IngestRun(
        load=load,
        window=end.clock - start.clock,
        finalized=end.log - start.log,
        all_final_after=final_at - start.clock,
        stored=stored,
        node_cpu=end.cpu - start.cpu,
        fsyncs=None if trace is None else sync_calls(trace, start.wall, end.wall),
        disk=database_bytes(directory / "data"),
        rss=rss,
        peak_rss=peak,
        reference=reference,
    )


async def shared_ingest(lab: Lab) -> IngestRun:
    """The suite's batched-ingest run (made once, read by several scenarios)."""

    async def measure() -> IngestRun:
        return await measure_ingest(lab.directory("ingest"), lab.scale.ingest_seconds)

    return await lab.shared("ingest", measure)


async def scenario(lab: Lab) -> list[Row]:
    """Finalized throughput of batched submits against raw sqlite3 executemany."""
    run = await shared_ingest(lab)
    ratio = run.rate / run.reference
    return [
        Row(
            "ingest",
            f"{per_second(run.rate)} finalized over {run.window:.0f} s",
            f"{per_second(run.reference, 'rows/s')} sqlite3 executemany",
            ratio,
            f">= {GOAL_RATIO} x and >= {GOAL_RATE:,} tx/s",
            ratio >= GOAL_RATIO and run.rate >= GOAL_RATE,
            (
                f"{CLIENTS} connections x {BATCH}-transaction JSON batches for"
                f" {run.window:.0f} s; finalized = log entries appended in that window"
                f" (acknowledged {per_second(run.load.tx_rate)}, {run.load.rejected} answers"
                f" 503); all {run.stored:,} final {run.all_final_after:.1f} s after the start",
                f"reference: {run.stored:,} rows (32-byte unique id, {TX_SIZE}-byte"
                f" blob) in {BATCH}-row transactions, WAL, synchronous=FULL as the node",
                f"node RSS at the end {mib(run.rss)} (peak {mib(run.peak_rss)}); load"
                f" generator used {run.load.cpu_share:.0%} of a core",
            ),
        )
    ]


def main() -> None:
    """Count-bounded ingest from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--size", type=int, default=TX_SIZE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qudag-bench-") as tmp:
        run = asyncio.run(
            measure_ingest(
                Path(tmp),
                0.0,
                total=args.total,
                batch=args.batch,
                clients=args.clients,
                size=args.size,
            )
        )
    shape = f"{args.total} x {args.size} B in batches of {args.batch}, {args.clients} clients"
    print(f"transactions:          {shape}")
    print(f"acknowledged:          {per_second(run.load.tx_rate)}")
    print(f"finalized:             {per_second(run.stored / run.all_final_after)}")
    print(f"reference (sqlite3):   {per_second(run.reference, 'rows/s')} executemany,")
    print(f"                       {args.batch} rows per transaction")
    print(f"ratio:                 {run.stored / run.all_final_after / run.reference:.2f} x")
    print(f"node RSS:              {mib(run.rss)} (peak {mib(run.peak_rss)})")
    print(f"database on disk:      {mib(run.disk)} = {run.disk_ratio:.2f} x raw bytes")
    if run.fsyncs is not None:
        print(f"fsync calls:           {run.fsyncs / run.window:,.0f} per second")


if __name__ == "__main__":
    main()
