"""Retention: how long final data is kept, and which checkpoint that keeps.

Everything is pruned at checkpoint boundaries. A retention picks the oldest certified
checkpoint ``C`` to keep; what lies below it goes (the DAG below ``C.round - gc_depth``,
the log up to ``C.log_length``). The latest certified checkpoint is always kept, with
its window and everything after it, so that a node can always serve a joining one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: Milliseconds in one unit of an age.
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_FORM = re.compile(r"(\d+)\s*(rounds|[smhd])")


@dataclass(frozen=True, slots=True)
class Retention:
    """Keep final data for ``rounds`` rounds, or for ``age_ms`` milliseconds, after the
    latest certified checkpoint; neither set: keep everything (archive)."""

    rounds: int | None = None
    age_ms: int | None = None

    @property
    def archive(self) -> bool:
        """Whether everything is kept."""
        return self.rounds is None and self.age_ms is None

    def shorter_than(self, other: Retention) -> bool:
        """Whether this retention surely keeps less than ``other``: archive keeps the
        most; rounds compare with rounds and ages with ages (a number of rounds and an
        age cannot be compared before the network runs)."""
        if self.archive:
            return False
        if other.archive:
            return True
        if self.rounds is not None and other.rounds is not None:
            return self.rounds < other.rounds
        if self.age_ms is not None and other.age_ms is not None:
            return self.age_ms < other.age_ms
        return False

    def __str__(self) -> str:
        if self.rounds is not None:
            return f"{self.rounds}rounds"
        if self.age_ms is not None:
            for unit in ("d", "h", "m", "s"):
                if self.age_ms % _UNIT_MS[unit] == 0:
                    return f"{self.age_ms // _UNIT_MS[unit]}{unit}"
        return "archive"


def parse_retention(text: str) -> Retention:
    """``archive``, a number of rounds (``50000rounds``) or an age (``90s``, ``30m``,
    ``12h``, ``7d``); raises ValueError saying which forms are accepted."""
    value = text.strip().lower().replace("_", "")
    if value == "archive":
        return Retention()
    match = _FORM.fullmatch(value)
    if match is None or int(match[1]) == 0:
        raise ValueError(
            "must be archive, a number of rounds (e.g. 50000rounds) or an age"
            " (e.g. 30m, 12h, 7d), above zero"
        )
    count, unit = int(match[1]), match[2]
    if unit == "rounds":
        return Retention(rounds=count)
    return Retention(age_ms=count * _UNIT_MS[unit])


@dataclass(frozen=True, slots=True)
class CheckpointMark:
    """What retention reads of a certified checkpoint."""

    number: int
    round: int
    log_length: int
    timestamp_ms: int


def checkpoint_to_keep(
    certified: Sequence[CheckpointMark], retention: Retention
) -> CheckpointMark | None:
    """The oldest certified checkpoint that ``retention`` keeps, from ``certified``
    (by number, ascending); None when nothing may be pruned (archive, or none certified).

    By rounds: the newest checkpoint at least ``rounds`` rounds older than the latest
    (all rounds from it on are kept, so at least ``rounds`` are). By age: the newest
    at least ``age_ms`` older than the latest, by the leaders' signed timestamps. Never
    beyond the latest certified checkpoint.
    """
    if retention.archive or not certified:
        return None
    latest = certified[-1]
    keep: CheckpointMark | None = None
    for mark in certified:
        if retention.rounds is not None:
            old_enough = mark.round <= latest.round - retention.rounds
        else:
            assert retention.age_ms is not None
            old_enough = mark.timestamp_ms <= latest.timestamp_ms - retention.age_ms
        if not old_enough:
            break
        keep = mark
    return keep
