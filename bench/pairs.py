"""Two kinds of run compared by taking turns in pairs (A B, B A, A B, B A, ...), so that
a drift of the machine over the run weighs on both alike, and the ratio of their
figures as a geometric mean over the pairs with its 95 % interval: the noise of this
machine in this run."""

from __future__ import annotations

import math
import statistics
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def turns(pairs: int) -> list[bool]:
    """Which kind runs at each turn: True for the first (A), False for the second (B)."""
    return [(k % 2 == 0) == (k // 2 % 2 == 0) for k in range(2 * pairs)]


async def run_pairs(pairs: int, run: Callable[[int, bool], Awaitable[T]]) -> list[tuple[T, T]]:
    """``run(turn, first)`` for each turn in order; the (A, B) outcomes of each pair."""
    outcomes = [await run(k, first) for k, first in enumerate(turns(pairs))]
    return [
        (outcomes[k], outcomes[k + 1]) if k // 2 % 2 == 0 else (outcomes[k + 1], outcomes[k])
        for k in range(0, len(outcomes), 2)
    ]


def paired_ratio(pairs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """The geometric mean of ``a / b`` over ``pairs`` and its 95 % interval (two standard
    errors of the mean log ratio either side)."""
    logs = [math.log(a / b) for a, b in pairs]
    mean = statistics.fmean(logs)
    error = 2 * statistics.stdev(logs) / math.sqrt(len(logs)) if len(logs) > 1 else 0.0
    return math.exp(mean), math.exp(mean - error), math.exp(mean + error)
