"""What every scenario shares: the scale of the run, a scratch directory, and the
measurements that several scenarios read (made once per suite run, on first use)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

from bench.attacker import AttackMix

T = TypeVar("T")

#: The repository's root: the working directory of the suite's helper processes.
ROOT = Path(__file__).resolve().parents[1]

#: Bytes of every benchmark transaction.
TX_SIZE = 256
#: Transactions per request of the batched scenarios.
BATCH = 1000


@dataclass(frozen=True)
class Scale:
    """Durations and sizes of one suite run (full or quick)."""

    name: str
    ingest_seconds: float
    single_seconds: float
    verify_rounds: int
    antientropy_vertices: int
    antientropy_rounds: int
    network_seconds: float
    tls_pairs: int  # plain and TLS testnets run in turn, each for network_seconds
    tracing_pairs: int  # nodes with and without the otel extra, in turn
    stream_seconds: float  # the ingest load of each run of the stream scenario
    stream_pairs: int  # nodes with and without stream subscribers, in turn
    catchup_transactions: int
    memory_transactions: int
    memory_window: float
    attack_seconds: float
    attack_mix: AttackMix
    #: the two histories a fresh node joins by state sync, and their vertices' size
    statesync_transactions: tuple[int, int]
    statesync_per_vertex: int
    retention: str  # QUDAG_RETENTION of the retention scenario's pruning node
    retention_soak_seconds: float


FULL = Scale(
    name="full",
    ingest_seconds=60.0,
    single_seconds=30.0,
    verify_rounds=2_500,
    antientropy_vertices=100_000,
    antientropy_rounds=20,
    network_seconds=60.0,
    tls_pairs=2,
    tracing_pairs=4,
    stream_seconds=30.0,
    stream_pairs=3,
    catchup_transactions=1_000_000,
    memory_transactions=5_000_000,
    memory_window=600.0,
    attack_seconds=30.0,
    attack_mix=AttackMix(),
    statesync_transactions=(500_000, 5_000_000),
    statesync_per_vertex=1_000,
    retention="3m",
    retention_soak_seconds=600.0,
)
QUICK = Scale(
    name="quick",
    ingest_seconds=10.0,
    single_seconds=4.0,
    verify_rounds=500,
    antientropy_vertices=100_000,
    antientropy_rounds=6,
    network_seconds=6.0,
    tls_pairs=1,
    tracing_pairs=4,
    stream_seconds=10.0,
    stream_pairs=2,
    catchup_transactions=100_000,
    memory_transactions=500_000,
    memory_window=10.0,
    attack_seconds=4.0,
    attack_mix=AttackMix(),
    statesync_transactions=(50_000, 500_000),
    statesync_per_vertex=100,
    retention="20s",
    retention_soak_seconds=120.0,
)


class Lab:
    """One suite run: its scale, its scratch directory, and its shared measurements."""

    def __init__(self, scale: Scale, scratch: Path, keep: bool = False) -> None:
        self.scale = scale
        self.scratch = scratch
        self.keep = keep
        self._shared: dict[str, asyncio.Task[object]] = {}
        self._made: list[Path] = []

    def directory(self, name: str) -> Path:
        """A new, empty directory under the scratch directory."""
        path = self.scratch / f"{len(self._made) + 1:02d}-{name}"
        path.mkdir(parents=True)
        self._made.append(path)
        return path

    def clean(self) -> None:
        """Remove the directories made so far (their figures are kept in memory), unless
        the run keeps them."""
        if not self.keep:
            for path in self._made:
                shutil.rmtree(path, ignore_errors=True)

    async def shared(self, key: str, measure: Callable[[], Awaitable[T]]) -> T:
        """The measurement ``key``, made by ``measure`` the first time it is asked for."""
        if key not in self._shared:

            async def run() -> object:
                return await measure()

            self._shared[key] = asyncio.ensure_future(run())
        return cast(T, await self._shared[key])
