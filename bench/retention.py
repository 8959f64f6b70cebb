"""Retention: disk under steady load past the retention, the submit pauses pruning
causes, and idle growth per day, each against an archive node in the same run.

Two one-validator nodes run side by side under the same load: one with
``QUDAG_RETENTION`` of a few minutes (``RetentionScale.retention``), one archive.
Every ``CHECKPOINT_EVERY`` seconds each node's database is given a certified
checkpoint row at its committed round and log head (read in one snapshot), as the
checkpoint protocol stores them; with an age retention the pruner keeps the newest
checkpoint at least that old, by the timestamps written (the wall clock here).

- **soak**: the load is ``RATE`` requests a second of ``PER_REQUEST`` transactions of
  ``TX_SIZE`` bytes to each node; the database and its WAL (``qudag.db*``) are sampled
  every ``SAMPLE_EVERY`` seconds; the figure is the growth over the second half of the
  run, against the archive node's.
- **pause**: every request's time (written to answered: a plain submit answers once
  its transaction is durable), p99 and max, on the pruning node against the archive
  node, same load, same time.
- **idle**: after the load, both nodes idle (heartbeat rounds every
  ``IDLE_HEARTBEAT`` s, 20 times the default's pace, to see in minutes what a day
  makes); the growth over the idle phase's second half, per round, times the rounds of a
  day at the default 10 s heartbeat.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sqlite3
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.lab import TX_SIZE, Lab
from bench.nodes import NodeProcess, database_bytes, running
from bench.report import Row, mib
from qudag_node.core.checkpoint import Checkpoint, window_root
from qudag_node.core.types import GenesisHash, VertexId

RATE = 20  # requests a second to each node
PER_REQUEST = 25  # transactions a request
SAMPLE_EVERY = 5.0
CHECKPOINT_EVERY = 5.0
IDLE_HEARTBEAT = 0.5
DEFAULT_HEARTBEAT = 10.0
GOAL_GROWTH = 0.05
GOAL_PAUSE = 0.050  # seconds: the worst submit may take this much longer than archive's


@dataclass(frozen=True)
class RetentionScale:
    """Durations of one run."""

    retention: str
    soak_seconds: float
    idle_seconds: float


FULL = RetentionScale(retention="3m", soak_seconds=600.0, idle_seconds=180.0)
QUICK = RetentionScale(retention="30s", soak_seconds=120.0, idle_seconds=60.0)


@dataclass
class Watched:
    """One node of the run and what was measured on it."""

    node: NodeProcess
    sizes: list[tuple[float, int]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    rounds: list[tuple[float, int]] = field(default_factory=list)


def certify_head(data_dir: Path) -> None:
    """Write a certified checkpoint row at the node's committed round and log head,
    read in one snapshot (the group commit writes both in one transaction)."""
    with contextlib.closing(sqlite3.connect(data_dir / "qudag.db", timeout=5)) as db:
        db.execute("BEGIN IMMEDIATE")
        meta = dict(db.execute("SELECT key, value FROM meta"))
        last = db.execute("SELECT seq, hash FROM log ORDER BY seq DESC LIMIT 1").fetchone()
        committed = int.from_bytes(meta.get("committed_round", b""), "big")
        known = db.execute("SELECT 1 FROM checkpoints WHERE number = ?", (committed,)).fetchone()
        if last is None or known:
            db.execute("ROLLBACK")
            return
        now_ms = int(time.time() * 1000)
        body = Checkpoint(
            GenesisHash(bytes(meta["genesis"])),
            committed,
            committed,
            VertexId(bytes(32)),
            now_ms,
            int(last[0]),
            bytes(last[1]),
            0,
            window_root([]),
        ).encode()
        db.execute(
            "INSERT INTO checkpoints (number, round, log_length, timestamp_ms, body, window,"
            " certificate) VALUES (?, ?, ?, ?, ?, x'', x'01')",
            (committed, committed, int(last[0]), now_ms, body),
        )
        db.execute("COMMIT")


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


async def watch(session: aiohttp.ClientSession, w: Watched, seconds: float) -> None:
    """Sample the database's size and the committed round; feed checkpoints."""
    start = time.monotonic()
    next_checkpoint = start
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        w.sizes.append((now, database_bytes(w.node.data_dir)))
        async with session.get(f"{w.node.url}/api/v1/status") as resp:
            w.rounds.append((now, int((await resp.json())["dag"]["committed_round"])))
        if now >= next_checkpoint:
            await asyncio.to_thread(certify_head, w.node.data_dir)
            next_checkpoint += CHECKPOINT_EVERY
        await asyncio.sleep(SAMPLE_EVERY)


def growth(samples: list[tuple[float, int]], since: float) -> float:
    """Relative growth from the first sample at or after ``since`` to the last."""
    tail = [size for at, size in samples if at >= since]
    return tail[-1] / tail[0] - 1


def per_day(w: Watched, since: float) -> float:
    """Bytes a day at the default heartbeat: growth per round since ``since``, times the
    rounds of a day."""
    sizes = [(at, size) for at, size in w.sizes if at >= since]
    rounds = [(at, r) for at, r in w.rounds if at >= since]
    made = rounds[-1][1] - rounds[0][1]
    return (sizes[-1][1] - sizes[0][1]) / max(1, made) * (86_400 / DEFAULT_HEARTBEAT)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def scenario(lab: Lab) -> list[Row]:
    """The soak, the pauses and the idle growth, pruning node against archive node."""
    scale = QUICK if lab.scale.name == "quick" else FULL
    base = {"QUDAG_HEARTBEAT_INTERVAL": str(IDLE_HEARTBEAT)}
    pruned = Watched(
        NodeProcess(lab.directory("retained"), {**base, "QUDAG_RETENTION": scale.retention})
    )
    archive = Watched(NodeProcess(lab.directory("archive"), base))
    total = scale.soak_seconds + scale.idle_seconds
    async with running(pruned.node), running(archive.node), aiohttp.ClientSession() as session:
        began = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for w in (pruned, archive):
                tg.create_task(watch(session, w, total))
                tg.create_task(load(session, w, scale.soak_seconds))
    soak_half = began + scale.soak_seconds / 2
    idle_half = began + scale.soak_seconds + scale.idle_seconds / 2
    soak_end = began + scale.soak_seconds
    kept, reference = growth(pruned.sizes, soak_half), growth(archive.sizes, soak_half)
    soak_sizes = [s for at, s in pruned.sizes if at <= soak_end]
    idle = {"pruned": per_day(pruned, idle_half), "archive": per_day(archive, idle_half)}
    load_note = (
        f"{RATE} req/s x {PER_REQUEST} tx of {TX_SIZE} B to each of two one-validator nodes"
        f" for {scale.soak_seconds:.0f} s; QUDAG_RETENTION={scale.retention} against archive;"
        f" a certified checkpoint row every {CHECKPOINT_EVERY:g} s at the committed round"
    )
    worst, worst_ref = max(pruned.latencies), max(archive.latencies)
    return [
        Row(
            "retention-disk",
            f"{kept * 100:+.1f} % over the 2nd half (peak {mib(max(soak_sizes))})",
            f"archive {reference * 100:+.1f} % ({mib(archive.sizes[-1][1])})",
            None,
            f"<= {GOAL_GROWTH * 100:g} %",
            kept <= GOAL_GROWTH,
            (load_note, "size: qudag.db + -wal + -shm, sampled every 5 s"),
        ),
        Row(
            "prune-pause",
            f"p99 {p99(pruned.latencies) * 1000:.1f} ms, max {worst * 1000:.1f} ms"
            f" ({len(pruned.latencies)} submits, {pruned.failures} failed)",
            f"archive p99 {p99(archive.latencies) * 1000:.1f} ms, max {worst_ref * 1000:.1f} ms",
            worst / worst_ref,
            f"max <= archive's + {GOAL_PAUSE * 1000:.0f} ms",
            worst <= worst_ref + GOAL_PAUSE and not pruned.failures,
            ("each submit timed from request to answer (sent once durable), same load",),
        ),
        Row(
            "idle-growth",
            f"{mib(idle['pruned'])}/day",
            f"archive {mib(idle['archive'])}/day",
            None,
            "flat (<= 1 MiB/day)",
            idle["pruned"] <= 1 << 20,
            (
                f"idle for {scale.idle_seconds:.0f} s after the soak, heartbeat every"
                f" {IDLE_HEARTBEAT:g} s; growth per round over the second half x"
                f" {86_400 / DEFAULT_HEARTBEAT:,.0f} rounds (a day at the default 10 s)",
            ),
        ),
    ]
