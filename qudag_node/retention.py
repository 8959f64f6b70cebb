"""The pruner: deletes what the retention settings no longer keep, in small batches, off
the hot path.

Every ``PRUNE_INTERVAL`` seconds it reads the certified checkpoints held, picks the
oldest one each retention keeps (:func:`qudag_node.core.retention.checkpoint_to_keep`;
the transactions' checkpoint is never newer than the DAG's), and deletes below it in
batches of a few hundred rows (:meth:`qudag_node.store.Store.prune_batch`).

A batch takes its turn on the store's one writer connection between two group
commits: the writer's transactions are taken under one FIFO lock, so a commit that
comes while a batch runs waits for that batch only, never for the whole prune. Batches
are sized to last about ``BATCH_SECONDS`` (halved when one takes longer, doubled while
they are quick) and each is followed by a pause as long as it took, so that pruning
holds the writer at most half the time. Deleted pages go to SQLite's free list and
are reused by later writes, so the file stops growing once the retention is reached.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from qudag_node.config import Settings
from qudag_node.core.retention import Retention, checkpoint_to_keep
from qudag_node.logs import get_logger
from qudag_node.metrics import Metrics
from qudag_node.ports import HeldRange
from qudag_node.store import LogBase, PrunePlan, Store

log = get_logger("qudag.retention")

#: Seconds between two looks at what may be pruned.
PRUNE_INTERVAL = 5.0
#: Target duration of one batch: what a commit waiting behind it may lose.
BATCH_SECONDS = 0.004
#: Bounds of a batch's row count, and where it starts.
MIN_BATCH, FIRST_BATCH, MAX_BATCH = 16, 128, 512


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """How long the DAG and the transactions are kept, and the DAG window's depth."""

    dag: Retention
    transactions: Retention
    gc_depth: int

    @classmethod
    def of(cls, settings: Settings) -> RetentionSettings:
        """The node's settings."""
        return cls(
            settings.retention, settings.kept_transactions, settings.engine_params().gc_depth
        )


class Pruner:
    """The retention's task (:meth:`run`), and what the node holds after its last pass."""

    def __init__(self, store: Store, settings: RetentionSettings, metrics: Metrics) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._held = HeldRange(0, 1)
        self._done: PrunePlan | None = None  # the last plan carried out in full
        self._limit = FIRST_BATCH

    @property
    def settings(self) -> RetentionSettings:
        """How long what is kept."""
        return self._settings

    @property
    def held_range(self) -> HeldRange:
        """The oldest round and log position held, as of the last pass (or start)."""
        return self._held

    async def run(self) -> None:
        """Prune every ``PRUNE_INTERVAL`` seconds, until cancelled."""
        while True:
            await self.prune()
            await asyncio.sleep(PRUNE_INTERVAL)

    async def prune(self) -> None:
        """One pass: delete everything the retention drops now, batch after batch."""
        plan = await self.plan()
        if plan is not None and plan != self._done:
            counts, longest = await self._carry_out(plan)
            self._done = plan
            if any(counts.values()):
                log.info(
                    "pruned",
                    below_round=plan.dag_round,
                    below_checkpoint=plan.checkpoint,
                    log_base=None if plan.log is None else plan.log.length,
                    longest_batch_ms=round(longest * 1000, 1),
                    **counts,
                )
        await self.refresh()

    async def refresh(self) -> None:
        """Read what the node holds now."""
        self._held = await self._store.held_range()
        self._metrics.on_holdings(self._held.oldest_round, self._held.oldest_log_position)

    async def plan(self) -> PrunePlan | None:
        """What the retention drops now; None if nothing (archive, or no certified
        checkpoint old enough)."""
        s = self._settings
        marks = await self._store.certified_marks()
        dag = checkpoint_to_keep(marks, s.dag)
        if dag is None:
            return None
        tx = checkpoint_to_keep(marks, s.transactions)
        if tx is not None and tx.number > dag.number:
            tx = dag  # transactions are never kept for less than the DAG
        base = None
        if tx is not None:
            base = LogBase(tx.log_length, await self._store.checkpoint_log_hash(tx.number))
        return PrunePlan(
            dag_round=dag.round - s.gc_depth,
            checkpoint=dag.number,
            log=base,
            log_round=0 if tx is None else tx.round - s.gc_depth,
        )

    async def _carry_out(self, plan: PrunePlan) -> tuple[dict[str, int], float]:
        """Batches until ``plan`` is done: the rows deleted by kind, and the longest a
        batch held the writer (seconds, waiting for its turn left out)."""
        counts: dict[str, int] = {}
        longest = 0.0
        cursor = 0
        while True:
            batch = await self._store.prune_batch(plan, cursor, self._limit)
            took = batch.seconds
            longest = max(longest, took)
            self._resize(took)
            if not batch.deleted and batch.cursor == cursor:
                return counts, longest
            cursor = batch.cursor
            self._metrics.on_pruned(batch.counts)
            for kind, count in batch.counts.items():
                counts[kind] = counts.get(kind, 0) + count
            await asyncio.sleep(took)  # leave the writer to the commits at least as long

    def _resize(self, took: float) -> None:
        if took > BATCH_SECONDS:
            self._limit = max(MIN_BATCH, self._limit // 2)
        elif took < BATCH_SECONDS / 2:
            self._limit = min(MAX_BATCH, self._limit * 2)
