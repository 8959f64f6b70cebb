"""What tracing costs when it is off: single submits against a node that has the
``otel`` extra installed but is not asked to trace, and against one that cannot
import opentelemetry at all (``PYTHONPATH`` leads to a package of that name whose
import fails), in the same run.

The two kinds of node take turns, A B B A A B B A, each a fresh node under the ``single``
load for the same time, so that a drift of the machine over the run weighs on both
alike. Our figure is the rate of the nodes with the extra (tracing off) against the
rate of those without it; the goal is that the difference stays within the noise.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bench.lab import Lab
from bench.loadgen import LoadResult
from bench.nodes import node_environment
from bench.report import Row, per_second
from bench.single import CONNECTIONS, NodeLoad, node_under_load

#: Least ratio of the rates counted as no measurable cost.
GOAL_RATIO = 0.95
#: The order of the runs: I, the extra installed; A, opentelemetry absent.
ORDER = "IAAIIAAI"


def without_otel(directory: Path) -> Path:
    """A ``PYTHONPATH`` directory whose ``opentelemetry`` package fails to import."""
    package = directory / "opentelemetry"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("no opentelemetry here")\n')
    return directory


async def importable(environment: dict[str, str]) -> bool:
    """Whether a node started with ``environment`` has opentelemetry to trace with."""
    check = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", "import qudag_node.tracing.spans"),
        stderr=asyncio.subprocess.DEVNULL,
        env=node_environment(environment),
    )
    return await check.wait() == 0


def _rate(runs: list[NodeLoad]) -> float:
    return sum(r.served.result.transactions for r in runs) / sum(
        r.served.result.elapsed for r in runs
    )


def _cpu_per_request(runs: list[NodeLoad]) -> str:
    seconds = sum(r.served.cores * r.served.result.elapsed for r in runs)
    return f"{seconds / sum(r.served.result.transactions for r in runs) * 1e6:.0f} µs"


def _worst_p99(runs: list[NodeLoad]) -> float:
    return max(r.served.result.p99 for r in runs)


def _runs(runs: list[NodeLoad]) -> str:
    return ", ".join(f"{r.served.result.rate:,.0f}" for r in runs)


async def scenario(lab: Lab) -> list[Row]:
    """Single submits with the extra installed but tracing off against without it."""
    base = lab.directory("tracing")
    absent = {"PYTHONPATH": str(without_otel(base / "no-otel"))}
    if not await importable({}) or await importable(absent):
        raise RuntimeError("the otel extra must be installed, and the stub must hide it")
    installed: list[NodeLoad] = []
    missing: list[NodeLoad] = []
    for k, kind in enumerate(ORDER):
        environment = {} if kind == "I" else absent
        run = await node_under_load(
            base / f"{k}-{kind}", lab.scale.single_seconds, None, environment
        )
        if run.served.result.failed:
            raise RuntimeError(f"submits failed: {run.served.result.first_error}")
        (installed if kind == "I" else missing).append(run)
    ratio = _rate(installed) / _rate(missing)
    last: LoadResult = installed[-1].served.result
    return [
        Row(
            "tracing",
            f"{per_second(_rate(installed), 'req/s')}, p99 {_worst_p99(installed) * 1000:.0f} ms"
            " (otel installed, tracing off)",
            f"{per_second(_rate(missing), 'req/s')}, p99 {_worst_p99(missing) * 1000:.0f} ms"
            " without opentelemetry",
            ratio,
            f">= {GOAL_RATIO} x",
            ratio >= GOAL_RATIO,
            (
                f"the single load ({CONNECTIONS} connections, {last.elapsed:.0f} s a run) on"
                f" fresh nodes in the order {' '.join(ORDER)} (I: the extra installed, A:"
                " opentelemetry not importable); runs of I"
                f" {_runs(installed)} req/s, of A {_runs(missing)} req/s",
                f"CPU time per answered request: I {_cpu_per_request(installed)}, A"
                f" {_cpu_per_request(missing)}",
            ),
        )
    ]
