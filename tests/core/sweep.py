"""A sweep of the deterministic simulation: many seeds over several network sizes.

Each seed is one :func:`tests.core.sim.run_seed` (its own keys, fault mix, delays,
losses and duplications); seeds run in blocks over a process pool, one worker per core
by default. For each network size the sweep prints the runs, how many were unsafe or
not live, the finality latency percentiles (simulated seconds), the slowest run, and
the command that replays each failing seed. It exits 1 when any run failed.

    .venv/bin/python -m tests.core.sweep --runs 2500 --validators 4 7 10 13

``--scheme mldsa65-ed25519`` runs networks of composite ML-DSA-65 + Ed25519 keys (each
run costs about six times an Ed25519 one: ML-DSA signing dominates).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from qudag_node.core.crypto import SCHEME_LABELS, Scheme
from tests.core.sim import RunResult, run_seed

#: Seeds handed to a worker at a time: large enough to amortise the hand-over, small
#: enough to keep every core busy until the end.
BLOCK = 25
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Timed:
    """One run and the wall-clock seconds it took to compute."""

    result: RunResult
    seconds: float


@dataclass(frozen=True, slots=True)
class SizeReport:
    """What the runs of one network size showed."""

    validators: int
    scheme: Scheme
    runs: int
    unsafe: int
    not_live: int
    latency: tuple[float, float, float, float]  # p50, p90, p99, max (simulated s)
    slowest: RunResult  # the run that took the most simulated time to settle
    slowest_seconds: float  # the longest wall-clock time one run took to compute
    failures: tuple[RunResult, ...]
    wall_seconds: float  # from the sweep's start until this size's last run was done


def replay_command(result: RunResult) -> str:
    """The command that replays one run (the scheme named unless it is Ed25519)."""
    command = f"python -m tests.core.sim --seed {result.seed} --validators {result.validators}"
    if result.scheme is not Scheme.ED25519:
        command += f" --scheme {result.scheme.label}"
    return command


def _run_block(validators: int, seeds: range, scheme: Scheme) -> list[Timed]:
    timed = []
    for seed in seeds:
        started = time.perf_counter()
        result = run_seed(seed, validators, scheme)
        timed.append(Timed(result, time.perf_counter() - started))
    return timed


def _blocks(seeds: range) -> list[range]:
    """``seeds`` cut into blocks of at most :data:`BLOCK` (its step kept)."""
    return [seeds[k : k + BLOCK] for k in range(0, len(seeds), BLOCK)]


def run_many(
    validators: int,
    seeds: range,
    workers: int | None = None,
    scheme: Scheme = Scheme.ED25519,
) -> list[RunResult]:
    """Every seed of ``seeds`` for one network size and scheme, in seed order, over a
    process pool."""
    blocks = _blocks(seeds)
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        done = pool.map(_run_block, [validators] * len(blocks), blocks, [scheme] * len(blocks))
        return [t.result for block in done for t in block]


def report(validators: int, timed: Sequence[Timed], wall_seconds: float) -> SizeReport:
    """Sum up the runs of one network size (all in one scheme)."""
    results = [t.result for t in timed]
    latencies = sorted(x for r in results for x in r.latencies)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return SizeReport(
        validators=validators,
        scheme=results[0].scheme,
        runs=len(results),
        unsafe=sum(not r.safe for r in results),
        not_live=sum(not r.live for r in results),
        latency=(q[49], q[89], q[98], latencies[-1]),
        slowest=max(results, key=lambda r: r.end_time),
        slowest_seconds=max(t.seconds for t in timed),
        failures=tuple(r for r in results if not (r.safe and r.live)),
        wall_seconds=wall_seconds,
    )


def describe(size: SizeReport) -> str:
    """The report of one size as lines of text, failures with their replay command."""
    p50, p90, p99, most = size.latency
    lines = [
        f"n = {size.validators}, {size.scheme.label}: {size.runs} runs, {size.unsafe} unsafe,"
        f" {size.not_live} not live; finality latency (simulated s) p50 {p50:.3f},"
        f" p90 {p90:.3f}, p99 {p99:.3f}, max {most:.3f}; slowest run seed"
        f" {size.slowest.seed} (all final at {size.slowest.end_time:.1f} s);"
        f" longest run to compute {size.slowest_seconds:.1f} s; done after"
        f" {size.wall_seconds:.0f} s",
    ]
    lines += [
        f"  FAILED seed {r.seed}: {'safe' if r.safe else 'UNSAFE'},"
        f" {'live' if r.live else 'NOT LIVE'} ({r.detail}); replay: {replay_command(r)}"
        for r in size.failures
    ]
    return "\n".join(lines)


def table(sizes: Sequence[SizeReport]) -> str:
    """The reports as a markdown table (docs/simulation.md records one)."""
    rows = [
        "| n | scheme | runs | unsafe | not live | latency p50 / p90 / p99 / max (simulated s)"
        " | slowest run (all final at) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sizes:
        latency = " / ".join(f"{x:.3f}" for x in s.latency)
        rows.append(
            f"| {s.validators} | {s.scheme.label} | {s.runs:,} | {s.unsafe} | {s.not_live}"
            f" | {latency}"
            f" | seed {s.slowest.seed} ({s.slowest.end_time:.1f} s) |"
        )
    failures = [f"- `{replay_command(r)}`: {r.detail}" for s in sizes for r in s.failures]
    return "\n".join(rows + (["", *failures] if failures else []))


def _machine() -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, commit {commit or 'unknown'}"
    )


def sweep(
    sizes: Sequence[int], seeds: range, workers: int, scheme: Scheme = Scheme.ED25519
) -> list[SizeReport]:
    """Run ``seeds`` for every size over one pool (all sizes queued at once, so no core
    idles between sizes); print each size's report as soon as its last block is done."""
    started = time.monotonic()
    reports = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        queued: list[tuple[int, list[Future[list[Timed]]]]] = [
            (n, [pool.submit(_run_block, n, block, scheme) for block in _blocks(seeds)])
            for n in sizes
        ]
        for n, futures in queued:
            timed = [t for future in futures for t in future.result()]
            reports.append(report(n, timed, time.monotonic() - started))
            print(describe(reports[-1]), flush=True)
    return reports


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and print its reports and table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2500, help="seeds per network size")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--validators", type=int, nargs="+", default=[4, 7, 10, 13])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scheme", choices=SCHEME_LABELS, default=Scheme.ED25519.label)
    args = parser.parse_args(argv)
    started = time.monotonic()
    seeds = range(args.seed, args.seed + args.runs)
    sizes = sweep(args.validators, seeds, args.workers, Scheme.from_label(args.scheme))
    print(
        f"\n{sum(s.runs for s in sizes):,} runs in {time.monotonic() - started:.0f} s"
        f" on {args.workers} workers; {_machine()}\n"
    )
    print(table(sizes))
    return 1 if any(s.failures for s in sizes) else 0


if __name__ == "__main__":
    sys.exit(main())
