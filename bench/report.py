"""Result rows, the machine they were measured on, and the markdown table."""

from __future__ import annotations

import datetime
import os
import platform
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One scenario's outcome: our figure beside the reference measured in the same run.

    ``passed`` is None for a figure without a goal. ``notes`` say how it was measured.
    """

    name: str
    figure: str
    reference: str
    ratio: float | None
    goal: str
    passed: bool | None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def verdict(self) -> str:
        """PASS, MISS, or a dash for a figure without a goal."""
        if self.passed is None:
            return "-"
        return "PASS" if self.passed else "MISS"

    @property
    def ratio_text(self) -> str:
        """The ratio as ``0.42 x``, or a dash."""
        return "-" if self.ratio is None else f"{self.ratio:.2f} x"

    def line(self) -> str:
        """The row as one line of the running output."""
        return (
            f"{self.name:<12} {self.figure} | ref {self.reference} | {self.ratio_text}"
            f" | goal {self.goal} | {self.verdict}"
        )


def cpu_model() -> str:
    """The CPU model named in /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown"


def machine_lines(command: str) -> list[str]:
    """The lines that head a table: command, machine, versions, date."""
    cores = os.cpu_count() or 0
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"Command: `{command}`",
        f"Machine: {cpu_model()}, {cores} cores; Python {platform.python_version()},"
        f" SQLite {sqlite3.sqlite_version}; {today}",
    ]


def markdown(rows: Sequence[Row], command: str, elapsed: float) -> str:
    """The results as markdown, ready to paste into docs/benchmarks.md."""
    lines = [*machine_lines(command), f"Suite run time: {elapsed:.0f} s", ""]
    lines += [
        "| scenario | our figure | reference (same run) | ratio | goal | result |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.name} | {r.figure} | {r.reference} | {r.ratio_text} | {r.goal} | {r.verdict} |"
        for r in rows
    ]
    notes = [f"- **{r.name}**: {note}" for r in rows for note in r.notes]
    if notes:
        lines += ["", "How each figure was measured:", "", *notes]
    return "\n".join(lines)


def per_second(count: float, unit: str = "tx/s") -> str:
    """A rate with thousands separators."""
    return f"{count:,.0f} {unit}"


def mib(size: float) -> str:
    """Bytes as MiB with one decimal."""
    return f"{size / (1 << 20):.1f} MiB"
