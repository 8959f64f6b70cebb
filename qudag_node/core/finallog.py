"""The finalized log: positions, the running hash, and the deduplication window.

A committed leader's history is appended vertex by vertex in the order
:meth:`~qudag_node.core.dag.Dag.take_history` gives, each vertex's transactions in
batch order. A transaction id already appended by a vertex that is still in the
window (round at or above the floor, which every node moves at the same commits)
is skipped, so a transaction carried by two vertices appears once. The window is
the same on every honest node, so the skips are too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from qudag_node.core.crypto import extend_log_hash
from qudag_node.core.dag import DagVertex
from qudag_node.core.events import LogEntry
from qudag_node.core.types import Seq, TxId


class FinalLog:
    """Length and running hash of the log, plus the ids appended inside the window."""

    def __init__(self, length: int, log_hash: bytes) -> None:
        self.length = length
        self.hash = log_hash
        self._logged: dict[TxId, int] = {}  # id -> round of the vertex that ordered it
        self._by_round: dict[int, list[TxId]] = {}

    def __contains__(self, tx: object) -> bool:
        return tx in self._logged

    def remember(self, round_: int, ids: Iterable[TxId]) -> list[TxId]:
        """Note ``ids`` as ordered by a vertex of ``round_``; returns those not seen before.

        An id keeps the highest round that ordered it, so it stays in the window as
        long as any vertex that carried it does, on a running node and after a restart
        alike.
        """
        fresh: list[TxId] = []
        bucket = self._by_round.setdefault(round_, [])
        for i in ids:
            seen = self._logged.get(i)
            if seen is None:
                fresh.append(i)
            if seen is None or seen < round_:
                self._logged[i] = round_
                bucket.append(i)
        return fresh

    def append(self, ordered: Sequence[tuple[DagVertex, tuple[TxId, ...]]]) -> tuple[LogEntry, ...]:
        """Append the transactions of ``ordered`` vertices; returns the new entries."""
        ids: list[TxId] = []
        carriers = []
        for dv, tx_ids in ordered:
            fresh = self.remember(dv.round, tx_ids)
            ids.extend(fresh)
            carriers.extend([dv.id] * len(fresh))
        hashes = extend_log_hash(self.hash, ids)
        start = self.length
        entries = tuple(
            LogEntry(Seq(start + k + 1), i, vid, h)
            for k, (i, vid, h) in enumerate(zip(ids, carriers, hashes, strict=True))
        )
        if hashes:
            self.hash = hashes[-1]
            self.length += len(hashes)
        return entries

    def prune_below(self, round_: int) -> None:
        """Forget ids ordered by vertices of rounds below ``round_``."""
        for r in [r for r in self._by_round if r < round_]:
            for i in self._by_round.pop(r):
                if self._logged.get(i) == r:
                    del self._logged[i]
