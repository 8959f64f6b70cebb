"""The benchmark suite: every scenario against real node processes on loopback, each
beside the raw limit it is compared with, measured in the same run.

Usage: python -m bench [--quick] [--only NAME[,NAME...]] [--keep DIR]

Prints one line per scenario as it finishes (our figure, the reference, their ratio,
the goal, PASS or MISS), then a markdown table for docs/benchmarks.md headed by the
command, the machine and the date, and notes on how each figure was measured.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import (
    antientropy,
    attack,
    catchup,
    disk,
    ids,
    ingest,
    memory,
    network,
    retention,
    single,
    statesync,
    stream,
    tls,
    tracing,
    verify,
)
from bench.lab import FULL, QUICK, Lab
from bench.report import Row, markdown

Scenario = Callable[[Lab], Awaitable[list[Row]]]

#: Every scenario, in the order they run.
SCENARIOS: dict[str, Scenario] = {
    "ingest": ingest.scenario,
    "single": single.scenario,
    "tracing": tracing.scenario,
    "verify": verify.scenario,
    "antientropy": antientropy.scenario,
    "network": network.scenario,
    "tls": tls.scenario,
    "catchup": catchup.scenario,
    "statesync": statesync.scenario,
    "memory": memory.scenario,
    "disk": disk.scenario,
    "ids": ids.scenario,
    "attack": attack.scenario,
    "retention": retention.scenario,
    "stream": stream.scenario,
}


def selected(only: str | None) -> list[str]:
    """The scenario names ``--only`` names (all of them without it), in run order."""
    if not only:
        return list(SCENARIOS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [n for n in SCENARIOS if n in names]


async def run_suite(lab: Lab, names: list[str]) -> list[Row]:
    """Run the scenarios one after the other, printing each row as it comes."""
    rows: list[Row] = []
    for name in names:
        started = time.monotonic()
        print(f"-- {name} ...", flush=True)
        try:
            found = await SCENARIOS[name](lab)
        finally:
            lab.clean()
        for row in found:
            print(row.line(), flush=True)
        print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
        rows += found
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short run (under 2 minutes)")
    parser.add_argument("--only", help="comma-separated scenario names: " + ", ".join(SCENARIOS))
    parser.add_argument("--keep", type=Path, help="keep the nodes' directories here")
    args = parser.parse_args(argv)
    names = selected(args.only)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qudag-bench-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        lab = Lab(QUICK if args.quick else FULL, work, keep=args.keep is not None)
        rows = asyncio.run(run_suite(lab, names))
    print()
    print(markdown(rows, command, time.monotonic() - started))
    return 0
