"""Retention: disk under steady load past the retention, the submit pauses pruning
causes, and idle growth per day, each against an archive node in the same run.

Two one-validator nodes run side by side under the same load: one with
``QUDAG_RETENTION`` of a few minutes (``Scale.retention``), one archive.
Each node certifies its own checkpoint every ``CHECKPOINT_INTERVAL`` rounds (a
one-validator network is its own quorum); with an age retention the pruner keeps the
newest checkpoint at least that old, by the leaders' signed timestamps.

- **soak**: the load is ``RATE`` requests a second of ``PER_REQUEST`` transactions of
  ``TX_SIZE`` bytes to each node; the database and its WAL (``qudag.db*``) are sampled
  every ``SAMPLE_EVERY`` seconds for ``Scale.retention_soak_seconds`` (full 600, quick
  120) with ``Scale.retention`` (full 3m, quick 20s); the figure is the growth over the
  second half of the soak, against the archive node's.
- **pause**: every request's time (written to answered: a plain submit answers once
  its transaction is durable), p99 and max, on the pruning node against the archive
  node, same load, same time.
- **idle**: meanwhile two more nodes, the same pair of settings, take no load and make
  heartbeat rounds every ``IDLE_HEARTBEAT`` s (20 times the default's pace, to see in
  minutes what a day makes); the figure is the slope of the bytes of pages in use
  (``page_count - freelist_count``, so that neither a WAL's fill nor free pages hide
  growth) over the committed round in the second half, times the rounds of a day at
  the default 10 s heartbeat; goal: at most ``IDLE_SHARE`` of the archive node's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.lab import TX_SIZE, Lab
from bench.nodes import NodeProcess, database_bytes, running
from bench.report import Row, mib

RATE = 20  # requests a second to each node
PER_REQUEST = 25  # transactions a request
SAMPLE_EVERY = 5.0  # at most; a short run samples 20 times over its soak
IDLE_HEARTBEAT = 0.5
DEFAULT_HEARTBEAT = 10.0
ROUNDS_A_DAY = 86_400 / DEFAULT_HEARTBEAT
GOAL_GROWTH = 0.05
GOAL_PAUSE = 0.050  # seconds: the worst submit may take this much longer than archive's
#: "Flat", as far as the pruning's sawtooth lets a few minutes tell: a node that keeps a
#: bounded window grows between passes and drops at each, so the slope of a short run
#: has an error of a few percent of the archive's growth.
IDLE_SHARE = 0.05
#: Rounds between checkpoints on every node of the run: about one a second under the
#: load, one every 10 s idle at IDLE_HEARTBEAT, so that the quick run's 20 s retention
#: has checkpoints to keep.
CHECKPOINT_INTERVAL = 20


@dataclass
class Watched:
    """One node of the run and what was measured on it."""

    node: NodeProcess
    sizes: list[tuple[float, int]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    rounds: list[tuple[float, int]] = field(default_factory=list)
    in_use: list[tuple[float, int]] = field(default_factory=list)


async def load(session: aiohttp.ClientSession, w: Watched, seconds: float) -> None:
    """``RATE`` requests a second for ``seconds``, each timed."""
    tick = 1.0 / RATE
    start = time.monotonic()
    count = 0

    async def one(n: int) -> None:
        txs = [f"{n:08d}-{i:03d}-".encode().ljust(TX_SIZE, b".") for i in range(PER_REQUEST)]
        body = {"transactions": [base64.b64encode(t).decode() for t in txs]}
        sent = time.perf_counter()
        async with session.post(f"{w.node.url}/api/v1/transactions", json=body) as resp:
            await resp.read()
            ok = resp.status == 202  # accepted: stored durably
        if ok:
            w.latencies.append(time.perf_counter() - sent)
        else:
            w.failures += 1

    async with asyncio.TaskGroup() as tg:
        while time.monotonic() - start < seconds:
            tg.create_task(one(count))
            count += 1
            await asyncio.sleep(max(0.0, start + count * tick - time.monotonic()))


async def watch(session: aiohttp.ClientSession, w: Watched, seconds: float, every: float) -> None:
    """Sample the database's size, pages in use and committed round every ``every``
    seconds for ``seconds``."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        w.sizes.append((now, database_bytes(w.node.data_dir)))
        w.in_use.append((now, await asyncio.to_thread(bytes_in_use, w.node.data_dir)))
        async with session.get(f"{w.node.url}/api/v1/status") as resp:
            w.rounds.append((now, int((await resp.json())["dag"]["committed_round"])))
        await asyncio.sleep(every)


def bytes_in_use(data_dir: Path) -> int:
    """Bytes of the database's pages in use (free pages left out), read-only."""
    uri = f"file:{data_dir / 'qudag.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (free,) = db.execute("PRAGMA freelist_count").fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
    return (int(pages) - int(free)) * int(size)


def growth(samples: list[tuple[float, int]], since: float, until: float) -> float:
    """Relative growth from the first sample at or after ``since`` to the last before
    ``until``."""
    span = [size for at, size in samples if since <= at <= until]
    return span[-1] / span[0] - 1


def per_day(w: Watched, since: float) -> float:
    """Bytes a day at the default heartbeat: the least-squares slope of the bytes in
    use over the committed round, from ``since`` on, times the rounds of a day."""
    points = [
        (r, size) for (at, size), (_, r) in zip(w.in_use, w.rounds, strict=True) if at >= since
    ]
    xs, ys = [float(r) for r, _ in points], [float(size) for _, size in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / spread if spread else 0
    return slope * ROUNDS_A_DAY


def longest_batch_ms(node: NodeProcess) -> float:
    """The longest a prune batch held the writer, from the node's ``pruned`` log lines."""
    log = node.data_dir.parent / f"{node.data_dir.name}.log"
    found = [0.0]
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == "pruned":
                found.append(float(record["longest_batch_ms"]))
    return max(found)


def p99(values: list[float]) -> float:
    """The 99th percentile."""
    return statistics.quantiles(values, n=100)[98]


async def scenario(lab: Lab) -> list[Row]:
    """The soak, the pauses and the idle growth, pruning nodes against archive nodes."""
    scale = lab.scale
    soak = scale.retention_soak_seconds
    every_node = {"QUDAG_CHECKPOINT_INTERVAL": str(CHECKPOINT_INTERVAL)}
    kept_setting = {**every_node, "QUDAG_RETENTION": scale.retention}
    idle = {**every_node, "QUDAG_HEARTBEAT_INTERVAL": str(IDLE_HEARTBEAT)}
    pruned = Watched(NodeProcess(lab.directory("retained"), kept_setting))
    archive = Watched(NodeProcess(lab.directory("archive"), every_node))
    idle_pruned = Watched(NodeProcess(lab.directory("idle-retained"), {**idle, **kept_setting}))
    idle_archive = Watched(NodeProcess(lab.directory("idle-archive"), idle))
    watched = (pruned, archive, idle_pruned, idle_archive)
    every = min(SAMPLE_EVERY, soak / 20)
    async with contextlib.AsyncExitStack() as stack:
        for w in watched:
            await stack.enter_async_context(running(w.node))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        began = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for w in watched:
                tg.create_task(watch(session, w, soak, every))
            for w in (pruned, archive):
                tg.create_task(load(session, w, soak))
    half, end = began + soak / 2, began + soak + every
    kept, reference = growth(pruned.sizes, half, end), growth(archive.sizes, half, end)
    idle_kept, idle_reference = per_day(idle_pruned, half), per_day(idle_archive, half)
    load_note = (
        f"{RATE} req/s x {PER_REQUEST} tx of {TX_SIZE} B to each of two one-validator nodes"
        f" for {soak:.0f} s; QUDAG_RETENTION={scale.retention} against archive;"
        f" a checkpoint every {CHECKPOINT_INTERVAL} rounds"
    )
    worst, worst_ref = max(pruned.latencies), max(archive.latencies)
    return [
        Row(
            "retention-disk",
            f"{kept * 100:+.1f} % over the 2nd half (peak {mib(max(s for _, s in pruned.sizes))})",
            f"archive {reference * 100:+.1f} % ({mib(archive.sizes[-1][1])})",
            None,
            f"<= {GOAL_GROWTH * 100:g} %",
            kept <= GOAL_GROWTH,
            (load_note, "size: qudag.db + -wal + -shm, sampled 20 times over the soak"),
        ),
        Row(
            "prune-pause",
            f"p99 {p99(pruned.latencies) * 1000:.1f} ms, max {worst * 1000:.1f} ms"
            f" ({len(pruned.latencies)} submits, {pruned.failures} failed; longest prune"
            f" batch {longest_batch_ms(pruned.node):.1f} ms)",
            f"archive p99 {p99(archive.latencies) * 1000:.1f} ms, max {worst_ref * 1000:.1f} ms",
            worst / worst_ref,
            f"max <= archive's + {GOAL_PAUSE * 1000:.0f} ms",
            worst <= worst_ref + GOAL_PAUSE and not pruned.failures,
            ("each submit timed from request to answer (sent once durable), same load",),
        ),
        Row(
            "idle-growth",
            f"{mib(idle_kept)}/day",
            f"archive {mib(idle_reference)}/day",
            None,
            f"flat (<= {IDLE_SHARE:.0%} of archive's)",
            idle_kept <= IDLE_SHARE * idle_reference,
            (
                f"two more nodes with the same settings, no load, heartbeat every"
                f" {IDLE_HEARTBEAT:g} s, beside the soak; slope of the bytes of pages in use"
                f" over the committed round in the second half x {ROUNDS_A_DAY:,.0f} rounds"
                " (a day at the default 10 s heartbeat)",
            ),
        ),
    ]
