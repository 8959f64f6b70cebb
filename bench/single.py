"""One transaction per request from 64 connections, against a bare aiohttp handler.

The same load generator process (pinned to the last CPU) drives, for the same time, first
the reference, a bare aiohttp handler that reads the body and answers a small JSON body
(``bench.bare``, its own process pinned to the first CPU: what aiohttp does on one
core), then a fresh node pinned to that same first CPU, every thread of it (its SQLite
writer, its signature verifiers): a node on a one-CPU machine, with the load generator
never sharing its core. Our figure is the node's acknowledged requests per second and
the 99th percentile of their latency (request written to answer read); the generator's
own CPU use is reported for both runs, so that it can be seen not to be the limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.lab import ROOT, TX_SIZE, Lab
from bench.loadgen import GRACE, LoadResult, LoadSpec, run_load
from bench.nodes import (
    NodeProcess,
    cpu_busy_seconds,
    cpu_seconds,
    running,
    strace_available,
    sync_calls,
    thread_cpu_seconds,
    wait_for_log,
)
from bench.report import Row, per_second

CONNECTIONS = 64
GOAL_RATIO = 0.5
GOAL_P99 = 0.050
#: Share of the pinned CPU taken by other work above which the ratio is flagged.
CONTENDED = 0.10
#: Seconds allowed for the bare server to print its port.
SERVER_START = 30.0


def cpus() -> tuple[int, int]:
    """The CPU the reference server runs on and the one the load generator runs on."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], cpus[-1]


def single_load(url: str, seconds: float, grace: float = GRACE) -> LoadSpec:
    """The single-submit load on ``url`` for ``seconds``, from the load generator's CPU."""
    return LoadSpec(
        urls=(url,),
        connections=CONNECTIONS,
        duration=seconds,
        kind="single",
        size=TX_SIZE,
        cpu=cpus()[1],
        grace=grace,
    )


async def bare_reference(seconds: float) -> LoadResult:
    """The load generator against ``bench.bare`` on one CPU."""
    return (await bare_under_load(seconds)).result


@dataclass(frozen=True)
class Served:
    """A server's load, the cores it used over the window, and the share of its CPU that
    went to anything else (other processes, interrupts): above a few percent, rates
    measured on that CPU are not comparable between runs."""

    result: LoadResult
    cores: float
    others: float


def _served(result: LoadResult, window: list[tuple[float, float, float]]) -> Served:
    (start, cpu_start, busy_start), (end, cpu_end, busy_end) = window
    span = end - start
    cores = (cpu_end - cpu_start) / span
    return Served(result, cores, max(0.0, (busy_end - busy_start) / span - cores))


async def bare_under_load(seconds: float) -> Served:
    """The load generator against ``bench.bare`` on one CPU."""
    server = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.bare", "--cpu", str(cpus()[0])),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert server.stdout is not None
    try:
        async with asyncio.timeout(SERVER_START):
            port = json.loads(await server.stdout.readline())["port"]
        window: list[tuple[float, float, float]] = []

        def mark() -> None:
            busy = cpu_busy_seconds(cpus()[0])
            window.append((time.monotonic(), cpu_seconds(server.pid), busy))

        result = await run_load(single_load(f"http://127.0.0.1:{port}", seconds), mark, mark)
        return _served(result, window)
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            await server.wait()


@dataclass(frozen=True)
class SingleRun:
    """The node's and the reference's results under the same single-transaction load."""

    reference: LoadResult
    ours: LoadResult
    node_cores: float  # the node's CPU time over the window, in cores
    main_cores: float  # the node's main thread's (the event loop's), likewise
    reference_cores: float  # the reference server's, likewise
    reference_others: float  # share of the reference's CPU busy with anything else
    node_others: float  # likewise during the node's run
    fsync_rate: float | None  # fsync + fdatasync calls per second, traced run (None: no strace)
    traced: LoadResult | None  # the traced run's load (strace slows every fsync it sees)


@dataclass(frozen=True)
class NodeLoad:
    """A fresh node's run under the single load."""

    served: Served  # the whole process's cores, all threads
    main_cores: float  # its main thread's
    fsyncs: float | None  # fsync + fdatasync calls per second, if traced


async def node_under_load(
    directory: Path,
    seconds: float,
    trace: Path | None = None,
    environment: Mapping[str, str] | None = None,
) -> NodeLoad:
    """A fresh node (with ``environment`` added to its own) under the load: its result,
    its cores (all threads, and the event loop's own), and its fsync calls/s if traced."""
    node = NodeProcess(directory, settings=dict(environment or {}), trace=trace, cpu=cpus()[0])
    window: list[tuple[float, float, float]] = []
    main: list[float] = []

    def mark() -> None:
        busy = cpu_busy_seconds(cpus()[0])
        window.append((time.time(), cpu_seconds(node.pid), busy))
        main.append(thread_cpu_seconds(node.pid, node.pid))

    async with running(node), aiohttp.ClientSession() as session:
        result = await run_load(single_load(node.url, seconds), mark, mark)
        if result.failed:
            raise RuntimeError(f"submits failed: {result.first_error}")
        await wait_for_log(session, node.url, result.transactions, 120.0)
    (start, _, _), (end, _, _) = window
    fsyncs = None if trace is None else sync_calls(trace, start, end) / (end - start)
    return NodeLoad(_served(result, window), (main[1] - main[0]) / (end - start), fsyncs)


async def measure_single(directory: Path, seconds: float) -> SingleRun:
    """The reference, then a fresh node, each under the load for ``seconds``; then, where
    strace is present, another fresh node under it to count fsyncs (strace stops the
    node at each fsync, which would slow the measured one)."""
    reference = await bare_under_load(seconds)
    ours = await node_under_load(directory / "data", seconds)
    traced = None
    if strace_available():
        traced = await node_under_load(directory / "traced", seconds, directory / "fsync.trace")
    return SingleRun(
        reference=reference.result,
        ours=ours.served.result,
        node_cores=ours.served.cores,
        main_cores=ours.main_cores,
        reference_cores=reference.cores,
        reference_others=reference.others,
        node_others=ours.served.others,
        fsync_rate=None if traced is None else traced.fsyncs,
        traced=None if traced is None else traced.served.result,
    )


async def shared_single(lab: Lab) -> SingleRun:
    """The suite's single-transaction run (made once, read by several scenarios)."""

    async def measure() -> SingleRun:
        return await measure_single(lab.directory("single"), lab.scale.single_seconds)

    return await lab.shared("single", measure)


def _contended(run: SingleRun) -> str:
    """A warning for the table when other work took a share of the pinned CPU."""
    if max(run.reference_others, run.node_others) <= CONTENDED:
        return ""
    return (
        f" (CPU shared: {run.reference_others:.0%} / {run.node_others:.0%} other work,"
        " the ratio is unsound)"
    )


def _per_request(cores: float, load: LoadResult) -> str:
    return f"{cores / load.rate * 1e6:.0f} µs" if load.rate else "-"


async def scenario(lab: Lab) -> list[Row]:
    """Acknowledged single-transaction submits per second and their p99 latency."""
    run = await shared_single(lab)
    ours, reference = run.ours, run.reference
    ratio = ours.rate / reference.rate
    fsyncs = (
        ""
        if run.fsync_rate is None or run.traced is None
        else f"; in a second run under strace, {run.fsync_rate:,.0f} fsync calls/s at"
        f" {run.traced.rate:,.0f} req/s"
    )
    return [
        Row(
            "single",
            f"{per_second(ours.rate, 'req/s')}, p99 {ours.p99 * 1000:.0f} ms",
            f"{per_second(reference.rate, 'req/s')}, p99 {reference.p99 * 1000:.0f} ms"
            f" bare aiohttp, 1 core{_contended(run)}",
            ratio,
            f">= {GOAL_RATIO} x, p99 <= {GOAL_P99 * 1000:.0f} ms",
            ratio >= GOAL_RATIO and ours.p99 <= GOAL_P99,
            (
                f"{CONNECTIONS} keep-alive connections, one {TX_SIZE}-byte transaction per"
                f" request, {ours.elapsed:.0f} s each; p50 {ours.p50 * 1000:.1f} ms, max"
                f" {ours.max * 1000:.0f} ms; {ours.rejected} answers 503",
                f"reference and node each pinned to CPU {cpus()[0]}, load generator to CPU"
                f" {cpus()[1]}; load generator CPU: {reference.cpu_share:.0%} of its core"
                " against the"
                f" reference, {ours.cpu_share:.0%} against the node; the node used"
                f" {run.node_cores:.2f} cores{fsyncs}",
                f"CPU time per answered request: the node {_per_request(run.node_cores, ours)}"
                f" ({_per_request(run.main_cores, ours)} in its event loop's thread, the rest"
                " in SQLite's and the verifiers'), the reference"
                f" {_per_request(run.reference_cores, reference)} (less sensitive than the"
                " rates to other work on the machine)",
                f"other work on CPU {cpus()[0]} (processes, interrupts): {run.reference_others:.0%}"
                f" of it during the reference's run, {run.node_others:.0%} during the node's;"
                " above a few percent the ratio is unsound (a contended CPU gives the"
                " node's several threads more of its time than the reference's one)",
            ),
        )
    ]
