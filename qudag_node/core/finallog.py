"""The finalized log: positions, the running hash, and the deduplication window.

A committed leader's history is appended vertex by vertex in the order
:meth:`~qudag_node.core.dag.Dag.take_history` gives, each vertex's transactions in
batch order. A transaction id already ordered by a vertex that is still in the window
(round at or above the floor, which every node moves at the same commits) is skipped,
so a transaction carried by two vertices appears once. The window is the same on
every honest node, so the skips are too.

The window keeps 8 bytes per id (its first 8 bytes, as one array per round, plus one
merged sorted copy that answers lookups with one binary search per batch), so that it
costs a few megabytes however many transactions the window's rounds carry. Two
different ids that share those 8 bytes inside one window would make the second be
skipped on every node alike (the log stays identical everywhere); among a million ids
the chance is about one in thirty million.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from qudag_node.core.crypto import extend_log_hash
from qudag_node.core.dag import DagVertex
from qudag_node.core.events import LogEntry
from qudag_node.core.types import Seq, TxId

Keys = npt.NDArray[np.uint64]


def id_keys(ids: Sequence[TxId]) -> Keys:
    """The first 8 bytes of each id, as one array (one C call over the joined ids)."""
    if not ids:
        return np.empty(0, dtype=np.uint64)
    return np.frombuffer(b"".join(ids), dtype=">u8")[::4].astype(np.uint64)


class FinalLog:
    """Length and running hash of the log, plus the ids ordered inside the window."""

    def __init__(self, length: int, log_hash: bytes) -> None:
        self.length = length
        self.hash = log_hash
        self._rounds: dict[int, Keys] = {}  # round -> sorted keys of the ids it ordered
        self._merged: Keys | None = None  # every round's keys, sorted; None when stale

    def contains(self, ids: Sequence[TxId]) -> list[bool]:
        """For each id: ordered by a vertex inside the window (one pass per round)."""
        return self._known(id_keys(ids)).tolist()  # type: ignore[no-any-return]

    def _known(self, keys: Keys) -> npt.NDArray[np.bool_]:
        if self._merged is None:  # the window changed (once per commit): merge it again
            parts = list(self._rounds.values())
            self._merged = np.sort(np.concatenate(parts)) if parts else np.empty(0, np.uint64)
        held = self._merged
        if not len(held):
            return np.zeros(len(keys), dtype=bool)
        at = np.searchsorted(held, keys).clip(max=len(held) - 1)
        found: npt.NDArray[np.bool_] = held[at] == keys
        return found

    def _add(self, round_: int, keys: Keys) -> None:
        held = self._rounds.get(round_)
        merged = keys if held is None else np.concatenate((held, keys))
        self._rounds[round_] = np.unique(merged)
        self._merged = None

    def remember(self, round_: int, ids: Sequence[TxId]) -> None:
        """Note ``ids`` as ordered by a vertex of ``round_`` (restoring the window).

        An id stays in the window while any vertex that ordered it does, on a running
        node and after a restart alike.
        """
        if ids:
            self._add(round_, id_keys(ids))

    def append(self, ordered: Sequence[tuple[DagVertex, tuple[TxId, ...]]]) -> tuple[LogEntry, ...]:
        """Append the transactions of ``ordered`` vertices; returns the new entries."""
        ids = [i for _, tx_ids in ordered for i in tx_ids]
        keys = id_keys(ids)
        fresh = ~self._known(keys)
        _, first = np.unique(keys, return_index=True)
        repeated = np.ones(len(keys), dtype=bool)
        repeated[first] = False  # later copies inside this very commit
        fresh &= ~repeated
        carriers = [dv.id for dv, tx_ids in ordered for _ in tx_ids]
        start = 0
        for dv, tx_ids in ordered:
            if tx_ids:
                self._add(dv.round, keys[start : start + len(tx_ids)])
            start += len(tx_ids)
        picked = np.flatnonzero(fresh).tolist()
        new_ids = [ids[k] for k in picked]
        hashes = extend_log_hash(self.hash, new_ids)
        entries = tuple(
            LogEntry(Seq(self.length + n + 1), ids[k], carriers[k], h)
            for n, (k, h) in enumerate(zip(picked, hashes, strict=True))
        )
        if hashes:
            self.hash = hashes[-1]
            self.length += len(hashes)
        return entries

    def prune_below(self, round_: int) -> None:
        """Forget ids ordered by vertices of rounds below ``round_``."""
        for r in [r for r in self._rounds if r < round_]:
            del self._rounds[r]
            self._merged = None
