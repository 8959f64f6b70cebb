"""Single-transaction submits with and without an attack mix running beside them.

Two fresh nodes of the same kind, one after the other in the same run, each pinned to
the first CPU, take the load of the ``single`` scenario (64 keep-alive connections,
one transaction per request, the load generator pinned to the last CPU) for the same
time. The first runs alone: the reference. Under the second, the attacker
(:mod:`bench.attacker`, a process of its own beside the load generator on the last
CPU, so that it takes none of the generator's time in-process) holds 10,000 idle
sockets and 50 slow-header clients open from before the load starts, and sends 20 gzip
bombs (1 GiB of zeros each, about 1 MB on the wire) and 4 JSON batches of 2,000,000
items in 16 MiB at a time, each again a second after its answer, until the load ends.
While it runs, this process asks ``/health`` four times a second.

Our figure is the acknowledged requests per second under attack; the goal is at least
0.7 of the figure without. The notes say what the attacker saw (how the node answered
each kind of attack), how ``/health`` answered, and each node's peak RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from bench.attacker import SETUP_TIMEOUT, AttackMix, AttackResult, AttackSpec
from bench.lab import ROOT, Lab
from bench.loadgen import LoadResult, quantile, run_load
from bench.nodes import NodeProcess, peak_rss_bytes, running
from bench.report import Row, mib, per_second
from bench.single import CONNECTIONS, cpus, single_load

T = TypeVar("T")

GOAL_RATIO = 0.7
#: Seconds past the load's deadline for submits in flight to be answered.
GRACE = 10.0
#: Seconds between two /health requests during the attack, and the most one may take.
HEALTH_INTERVAL = 0.25
HEALTH_TIMEOUT = 5.0
#: Seconds the attacker has to build its bodies and open its sockets, and to report.
ATTACKER_START = SETUP_TIMEOUT + 60.0
ATTACKER_STOP = 60.0
#: File descriptors the node and this process need beside the idle sockets.
SPARE_FDS = 2048


@dataclass(frozen=True)
class Health:
    """How ``/health`` answered while the node was under attack."""

    answered: int  # 200 answers
    failed: int  # anything else, or no answer within HEALTH_TIMEOUT
    p50: float
    max: float


@dataclass(frozen=True)
class AttackRun:
    """Both loads, what the attacker saw, and how the nodes fared."""

    calm: LoadResult
    attacked: LoadResult
    attack: AttackResult
    health: Health
    calm_rss: int  # peak RSS of each node, bytes
    attacked_rss: int
    file_limit: int  # this process's soft RLIMIT_NOFILE (the nodes inherit it)


def raise_file_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE of this process (and so of the nodes it starts)
    towards ``wanted``, never above the hard limit; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


async def _load(url: str, seconds: float) -> LoadResult:
    """The single-transaction load; a generator that could not finish counts as no
    request answered (with its error), not as a crash of the suite."""
    try:
        return await run_load(single_load(url, seconds, GRACE))
    except RuntimeError as e:
        return LoadResult(seconds, 0, 0, CONNECTIONS, 0, 0.0, 0.0, 0.0, 0.0, str(e)[:300])


async def _watch_health(url: str, stop: asyncio.Event) -> Health:
    """Ask ``/health`` every :data:`HEALTH_INTERVAL` until ``stop``."""
    latencies: list[float] = []
    failed = 0
    timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with session.get(url + "/health") as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append(time.monotonic() - started)
            else:
                failed += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEALTH_INTERVAL):
                    await stop.wait()
    return Health(len(latencies), failed, quantile(latencies, 0.5), max(latencies, default=0.0))


async def attacked_while(
    spec: AttackSpec, work: Callable[[], Awaitable[T]]
) -> tuple[T, AttackResult]:
    """Start the attacker, run ``work`` once its sockets are open, then stop the
    attacker (SIGTERM) and read what it saw."""
    attacker = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.attacker", json.dumps(asdict(spec))),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert attacker.stdout is not None
    assert attacker.stderr is not None
    try:
        async with asyncio.timeout(ATTACKER_START):
            started = await attacker.stdout.readline()
        if json.loads(started or b"{}").get("event") != "started":
            error = (await attacker.stderr.read()).decode(errors="replace")
            raise RuntimeError(f"the attacker did not start: {error[-2000:]}")
        outcome = await work()
        attacker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(ATTACKER_STOP):
            line = await attacker.stdout.readline()
            await attacker.wait()
        if not line:
            error = (await attacker.stderr.read()).decode(errors="replace")
            raise RuntimeError(f"the attacker failed: {error[-2000:]}")
        return outcome, AttackResult(**json.loads(line))
    finally:
        if attacker.returncode is None:
            attacker.kill()
            await attacker.wait()


async def _under_attack(
    node: NodeProcess, mix: AttackMix, seconds: float
) -> tuple[LoadResult, AttackResult, Health]:
    """The load against ``node`` while the attacker runs; the attacker stops after it."""

    async def load_and_health() -> tuple[LoadResult, Health]:
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch_health(node.url, stop))
        try:
            load = await _load(node.url, seconds)
        finally:
            stop.set()
            health = await watcher
        return load, health

    spec = AttackSpec(node.url, seconds + GRACE + ATTACKER_STOP, mix, cpus()[1])
    (load, health), attack = await attacked_while(spec, load_and_health)
    return load, attack, health


async def measure_attack(directory: Path, seconds: float, mix: AttackMix) -> AttackRun:
    """A fresh node under the load alone, then another under the load and the attack."""
    file_limit = raise_file_limit(mix.idle + mix.slow + mix.bombs + mix.batches + SPARE_FDS)
    async with running(NodeProcess(directory / "calm", cpu=cpus()[0])) as node:
        calm = await _load(node.url, seconds)
        calm_rss = peak_rss_bytes(node.pid)
    if calm.failed or not calm.accepted:
        raise RuntimeError(f"submits failed without any attack: {calm.first_error}")
    async with running(NodeProcess(directory / "attacked", cpu=cpus()[0])) as node:
        attacked, attack, health = await _under_attack(node, mix, seconds)
        attacked_rss = peak_rss_bytes(node.pid)
    return AttackRun(calm, attacked, attack, health, calm_rss, attacked_rss, file_limit)


def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none answered"


def _batch_times(attack: AttackResult) -> str:
    if not attack.batches:
        return " (requests in flight when the load ended are not counted)"
    return (
        f", from sending to the answer (or to giving up) p50 {attack.batch_p50:.2f} s,"
        f" max {attack.batch_max:.2f} s"
    )


async def scenario(lab: Lab) -> list[Row]:
    """Single-transaction submits per second under the attack mix, against without."""
    mix = lab.scale.attack_mix
    run = await measure_attack(lab.directory("attack"), lab.scale.attack_seconds, mix)
    calm, attacked, attack, health = run.calm, run.attacked, run.attack, run.health
    ratio = attacked.rate / calm.rate
    failures = f"; {attacked.failed} failed ({attacked.first_error})" if attacked.failed else ""
    return [
        Row(
            "attack",
            f"{per_second(attacked.rate, 'req/s')}, p99 {attacked.p99 * 1000:.0f} ms under attack",
            f"{per_second(calm.rate, 'req/s')}, p99 {calm.p99 * 1000:.0f} ms without",
            ratio,
            f">= {GOAL_RATIO} x",
            ratio >= GOAL_RATIO,
            (
                f"the single load ({CONNECTIONS} connections, {attacked.elapsed:.0f} s each)"
                f" against two fresh nodes pinned to CPU {cpus()[0]}; under attack"
                f" {attacked.accepted:,} accepted, {attacked.rejected} answers 503{failures}",
                f"attack mix: {mix.idle:,} idle sockets ({attack.idle_opened:,} open at the"
                f" start, {attack.idle_reopened:,} opened again after the node closed them,"
                f" {attack.idle_refused:,} connects refused or timed out); {mix.slow}"
                f" slow-header clients, a byte every {mix.slow_interval:g} s"
                f" ({attack.slow_closed} closed by the node, median held"
                f" {attack.slow_held:.1f} s)",
                f"{mix.bombs} gzip bombs of {mib(attack.bomb_wire_bytes)} expanding to"
                f" {mib(mix.bomb_bytes)}: {_statuses(attack.bombs)}; {mix.batches} JSON"
                f" batches of {mix.batch_items:,} items in {mib(attack.batch_wire_bytes)}:"
                f" {_statuses(attack.batches)}{_batch_times(attack)}",
                f"/health during the attack: {health.answered} answered (p50"
                f" {health.p50 * 1000:.0f} ms, max {health.max * 1000:.0f} ms),"
                f" {health.failed} failed or over {HEALTH_TIMEOUT:g} s; node peak RSS"
                f" {mib(run.calm_rss)} without, {mib(run.attacked_rss)} under attack",
                f"CPU: the attacker {attack.cpu_seconds:.1f} s, the load generator"
                f" {calm.cpu_share:.0%} of its core without, {attacked.cpu_share:.0%} under"
                f" attack; RLIMIT_NOFILE {run.file_limit:,} for the nodes",
            ),
        )
    ]
