"""Memory with millions of stored transactions, its flatness under load, and start-up.

One node ingests the stored transactions through its API (batches of 1,000 from 4
connections; the build is timed and reported: it is the fastest honest way to such a
database, every row written by the node itself). The node is stopped and started again
on that database: the start-up figure is from the new process's spawn to ``/ready``
answering 200. Then the load generator offers half the build's acknowledged rate, on
a fixed schedule, for the window, while the node's RSS is read from /proc every second.
Our figures: the highest RSS of the restarted process (VmHWM, which includes its
start-up), the change of RSS between the window's middle and its end (minutes 5 and 10
of the full run's 10 minutes), and the start-up time.

The reference, in the same run: the RSS of a Python process that has only imported
the node's modules (interpreter, aiohttp, numpy, PyNaCl, ...), the floor of any node
process; the ratio says how much the node's state adds to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import aiohttp

from bench.catchup import build_history
from bench.lab import BATCH, TX_SIZE, Lab
from bench.loadgen import LoadSpec, run_load
from bench.nodes import NodeProcess, log_length, peak_rss_bytes, rss_bytes, running
from bench.report import Row

GOAL_RSS = 150 * 10**6
GOAL_DRIFT = 0.10
GOAL_STARTUP = 2.0


async def baseline_rss() -> int:
    """RSS of a Python process that has only imported the node's modules: the floor
    any node process starts from."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import pathlib, qudag_node.cli; print(pathlib.Path('/proc/self/status').read_text())",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await probe.communicate()
    for line in out.decode().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def sample_rss(pid: int, samples: list[tuple[float, int]]) -> None:
    """Append (monotonic time, RSS) every second until cancelled."""
    while True:
        samples.append((time.monotonic(), rss_bytes(pid)))
        await asyncio.sleep(1.0)


def _when(seconds: float, minutes: bool) -> str:
    """A moment of the window, in minutes for long windows."""
    return f"min {seconds / 60:g}" if minutes else f"{seconds:g} s"


def rss_at(samples: list[tuple[float, int]], when: float) -> int:
    """The RSS sampled closest to ``when``."""
    return min(samples, key=lambda s: abs(s[0] - when))[1]


async def scenario(lab: Lab) -> list[Row]:
    """Peak RSS, its drift under half load, and start-up time on a large database."""
    transactions, window = lab.scale.memory_transactions, lab.scale.memory_window
    directory = lab.directory("memory") / "data"
    async with aiohttp.ClientSession() as session:
        async with running(NodeProcess(directory)) as builder:
            built = await build_history(builder, session, transactions)
            stored = await log_length(session, builder.url)
        node = NodeProcess(directory)
        async with running(node):
            startup = time.monotonic() - node.started_at
            samples: list[tuple[float, int]] = []
            sampler = asyncio.create_task(sample_rss(node.pid, samples))
            half = stored / built / 2
            spec = LoadSpec(
                urls=(node.url,),
                connections=4,
                duration=window,
                batch=BATCH,
                size=TX_SIZE,
                rate=half / BATCH,
            )
            started = time.monotonic()
            load = await run_load(spec)
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            peak = peak_rss_bytes(node.pid)
    if load.failed:
        raise RuntimeError(f"submits failed: {load.first_error}")
    floor = await baseline_rss()
    middle, end = rss_at(samples, started + window / 2), rss_at(samples, started + window)
    drift = (end - middle) / middle
    minutes = window >= 120
    mid_point, end_point = _when(window / 2, minutes), _when(window, minutes)
    return [
        Row(
            "memory",
            f"peak RSS {peak / 1e6:.0f} MB with {stored:,} tx; {drift:+.1%} from"
            f" {mid_point} to {end_point}; /ready in {startup:.2f} s",
            f"{floor / 1e6:.0f} MB: Python with the node's modules imported",
            peak / floor,
            f"<= {GOAL_RSS / 1e6:.0f} MB, within {GOAL_DRIFT:.0%}, <= {GOAL_STARTUP:g} s",
            peak <= GOAL_RSS and abs(drift) <= GOAL_DRIFT and startup <= GOAL_STARTUP,
            (
                f"database built through the API in {built:.0f} s ({stored / built:,.0f} tx/s);"
                f" then {half:,.0f} tx/s offered on a fixed schedule for {window:g} s"
                f" ({load.tx_rate:,.0f} tx/s accepted); RSS {middle / 1e6:.0f} MB at"
                f" {mid_point}, {end / 1e6:.0f} MB at {end_point}"
                + ("" if minutes else " (a short window: the full run compares min 5 and 10)"),
            ),
        )
    ]
