"""What tracing costs when it is off: single submits against a node that has the
``otel`` extra installed but is not asked to trace, and against one that cannot
import opentelemetry at all (``PYTHONPATH`` leads to a package of that name whose
import fails), in the same run.

The two kinds of node take turns in pairs, I A, A I, I A, A I, each a fresh node under
the ``single`` load for the same time, so that a drift of the machine over the run
weighs on both alike. Our figure is the geometric mean of the pairs' rate ratios
(installed over absent), with its 95 % interval from the spread of those ratios: the
noise of this machine in this run. The goal, no measurable cost, holds when the ratio
is at least 0.95 or the interval reaches 1.0.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bench.lab import Lab
from bench.nodes import node_environment
from bench.pairs import paired_ratio, run_pairs, turns
from bench.report import Row, per_second
from bench.single import CONNECTIONS, NodeLoad, node_under_load

#: Least ratio of the rates counted as no measurable cost whatever the noise.
GOAL_RATIO = 0.95


def without_otel(directory: Path) -> Path:
    """A ``PYTHONPATH`` directory whose ``opentelemetry`` package fails to import."""
    package = directory / "opentelemetry"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("no opentelemetry here")\n')
    return directory


async def importable(environment: dict[str, str]) -> bool:
    """Whether a node started with ``environment`` could load its tracing spans."""
    check = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", "import qudag_node.tracing.spans"),
        stderr=asyncio.subprocess.DEVNULL,
        env=node_environment(environment),
    )
    return await check.wait() == 0


def _cpu_per_request(run: NodeLoad) -> float:
    return run.served.cores / run.served.result.rate


def _rate(runs: list[NodeLoad]) -> float:
    return sum(r.served.result.transactions for r in runs) / sum(
        r.served.result.elapsed for r in runs
    )


def _worst_p99(runs: list[NodeLoad]) -> float:
    return max(r.served.result.p99 for r in runs)


async def scenario(lab: Lab) -> list[Row]:
    """Single submits with the extra installed but tracing off against without it."""
    base = lab.directory("tracing")
    absent = {"PYTHONPATH": str(without_otel(base / "no-otel"))}
    if not await importable({}) or await importable(absent):
        raise RuntimeError("the otel extra must be installed, and the stub must hide it")
    order = "".join("I" if first else "A" for first in turns(lab.scale.tracing_pairs))

    async def run(turn: int, installed: bool) -> NodeLoad:
        environment = {} if installed else absent
        kind = "I" if installed else "A"
        done = await node_under_load(
            base / f"{turn}-{kind}", lab.scale.single_seconds, None, environment
        )
        if done.served.result.failed:
            raise RuntimeError(f"submits failed: {done.served.result.first_error}")
        return done

    pairs = await run_pairs(lab.scale.tracing_pairs, run)
    ratio, low, high = paired_ratio(
        [(i.served.result.rate, a.served.result.rate) for i, a in pairs]
    )
    # CPU per request: A's over I's, so that above 1 still means I is cheaper
    cpu, cpu_low, cpu_high = paired_ratio(
        [(_cpu_per_request(a), _cpu_per_request(i)) for i, a in pairs]
    )
    installed, missing = [i for i, _ in pairs], [a for _, a in pairs]
    return [
        Row(
            "tracing",
            f"{per_second(_rate(installed), 'req/s')}, p99 {_worst_p99(installed) * 1000:.0f} ms"
            " (otel installed, tracing off)",
            f"{per_second(_rate(missing), 'req/s')}, p99 {_worst_p99(missing) * 1000:.0f} ms"
            " without opentelemetry",
            ratio,
            f">= {GOAL_RATIO} x, or 1.0 within the interval",
            ratio >= GOAL_RATIO or high >= 1.0,
            (
                f"the single load ({CONNECTIONS} connections, {lab.scale.single_seconds:.0f} s"
                f" a run) on fresh nodes in the order {' '.join(order)} (I: the extra"
                " installed, tracing off; A: opentelemetry not importable); rates of the pairs"
                " (I/A): "
                + ", ".join(
                    f"{i.served.result.rate:,.0f}/{a.served.result.rate:,.0f}" for i, a in pairs
                ),
                f"the pairs' rate ratio {ratio:.2f} x, 95 % interval {low:.2f} to {high:.2f};"
                f" CPU time per request, A's over I's, {cpu:.2f} x ({cpu_low:.2f} to"
                f" {cpu_high:.2f}); a node that does not trace never imports opentelemetry, so"
                " I and A run the same code and the interval is the machine's noise",
            ),
        )
    ]
